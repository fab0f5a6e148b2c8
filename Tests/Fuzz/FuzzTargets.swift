// libFuzzer entry point for every fuzz target; scripts/fuzz.sh builds this file with the
// project's sources (instrumented) and picks the target with PROGSYNC_FUZZ_TARGET.
// Each target traps (crashes) on a broken invariant, never on input it refuses cleanly.
import Crypto
import Foundation
@testable import ProgSyncCore

enum FuzzTarget: String, CaseIterable {
    case commit, wire, bundle, json, csv, registry, apply

    func run(_ input: [UInt8]) {
        switch self {
        case .commit: fuzzCommit(input)
        case .wire: fuzzWire(input)
        case .bundle: fuzzBundle(input)
        case .json: fuzzJSON(input)
        case .csv: fuzzCSV(input)
        case .registry: fuzzRegistry(input)
        case .apply: ApplyFuzzer.shared.run(input)
        }
    }
}

nonisolated(unsafe) var selectedTarget: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>) -> Int32 {
    let env = ProcessInfo.processInfo.environment
    if let folder = env["PROGSYNC_FUZZ_WRITE_SEEDS"] {
        do { try SeedCorpus.write(to: URL(fileURLWithPath: folder)) } catch {
            FileHandle.standardError.write(Data("seed corpus: \(error)\n".utf8))
            exit(1)
        }
        exit(0)
    }
    guard let name = env["PROGSYNC_FUZZ_TARGET"], let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("set PROGSYNC_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
    selectedTarget = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    selectedTarget?.run(input)
    return 0
}

/// A broken invariant: crash with a message libFuzzer shows next to the input.
func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition() { fatalError("invariant broken: \(message())", line: line) }
}

// MARK: - Decoders

/// The commit decoder accepts only canonical bytes: what decodes re-encodes to the very same
/// bytes (so one signature cannot cover two encodings), and the layout reader agrees with it.
func fuzzCommit(_ input: [UInt8]) {
    guard let signed = try? SignedCommit(canonicalBytes: input, signature: [UInt8](repeating: 0, count: 64)) else {
        _ = try? Commit.Layout(input)
        return
    }
    let commit = signed.commit
    invariant(commit.canonicalBytes == input, "a decoded commit re-encodes to other bytes")
    guard let layout = try? Commit.Layout(input) else { return invariant(false, "Layout refuses a commit that decodes") }
    invariant(layout.ref == commit.ref && layout.stamp == commit.stamp && layout.schema == commit.schema, "Layout reads another header")
    invariant(layout.changes.map(\.valueBytes) == commit.changes.map(\.valueBytes), "Layout reads other values")
    _ = commit.dependencies
}

/// The peer wire batch: JSON text in, commits out, or one clear error.
func fuzzWire(_ input: [UInt8]) {
    guard let json = try? JSONParser.parse(input) else { return }
    guard let commits = try? CommitWire.decode(json, maxCommits: 64) else { return }
    let again = try? CommitWire.decode(CommitWire.json(commits), maxCommits: 64)
    invariant(again?.map(\.hash) == commits.map(\.hash), "wire batch does not survive a re-encode")
}

/// The bundle reader. The first byte chooses whether the rest is a whole file or the content
/// inside the gzip stream (then sealed here by a test key, so the fuzzer reaches the parser).
func fuzzBundle(_ input: [UInt8]) {
    guard let mode = input.first else { return }
    let exporter = ApplyFuzzer.shared.signers[0]
    var file = Array(input.dropFirst())
    if mode & 1 == 1 {
        guard var deflater = try? Gzip.Deflater() else { return }
        guard (try? deflater.write(file)) != nil, let compressed = try? deflater.finish() else { return }
        file = CommitBundle.magic + compressed
        guard let seal = try? CommitBundle.seal(file, signedBy: exporter) else { return }
        file += seal
    }
    guard let bundle = try? CommitBundle(decoding: file) else { return }
    _ = bundle.versionVector
    _ = bundle.isSealed(by: exporter.publicKey)
    let reencoded = try? CommitBundle(header: bundle.header, commits: bundle.commits).encoded(signedBy: exporter)
    guard let again = reencoded.flatMap({ try? CommitBundle(decoding: $0) }) else {
        return invariant(false, "a decoded bundle does not re-encode")
    }
    invariant(again.isSealed(by: exporter.publicKey), "a re-encoded bundle is not sealed by its exporter")
    invariant(again.header.canonicalBytes == bundle.header.canonicalBytes, "bundle header changes on re-encode")
    invariant(again.commits.map(\.body) == bundle.commits.map(\.body) && again.commits.map(\.signature) == bundle.commits.map(\.signature),
              "bundle commits change on re-encode")
    for c in bundle.commits { _ = try? SignedCommit(canonicalBytes: c.body, signature: c.signature) }
}

/// The JSON parser: canonical text parses and is a fixed point (values are compared by their
/// canonical bytes, as nodes do: `4.0` is the integer 4).
func fuzzJSON(_ input: [UInt8]) {
    guard let value = try? JSONParser.parse(input) else { return }
    let canonical = value.canonicalBytes
    guard let again = try? JSONParser.parse(canonical) else { return invariant(false, "canonical JSON does not parse") }
    invariant(again.canonicalBytes == canonical, "canonical JSON is not a fixed point")
    _ = value.prettyString()
}

/// The CSV parser: rows written back with `CSV.line` parse to the same fields.
func fuzzCSV(_ input: [UInt8]) {
    guard let rows = try? CSV.parse(input) else { return }
    let kept = rows.filter { $0.fields != [""] }.map(\.fields)
    guard !kept.isEmpty else { return }
    let text = "sep=,\n" + kept.map { CSV.line($0) }.joined()
    guard let again = try? CSV.parse(Array(text.utf8)) else { return invariant(false, "written CSV does not parse") }
    invariant(again.map(\.fields) == kept, "CSV rows change on a write and read")
}

/// The registry reader: its own JSON form reads back to the same nodes.
func fuzzRegistry(_ input: [UInt8]) {
    guard let json = try? JSONParser.parse(input), let registry = try? PartnerRegistry(json: json) else { return }
    guard let again = try? PartnerRegistry(json: registry.json) else { return invariant(false, "a registry's own JSON does not read back") }
    invariant(Set(again.nodes.keys) == Set(registry.nodes.keys), "registry nodes change on a write and read")
    invariant(again.coordinators == registry.coordinators, "registry coordinators change on a write and read")
}
