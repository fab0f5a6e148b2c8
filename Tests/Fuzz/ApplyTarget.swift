import Crypto
import Foundation
import ProgSyncCore
import ProgSyncStore

/// Reads fuzzer bytes as choices; past the end every choice is 0.
struct FuzzBytes {
    let bytes: [UInt8]
    var index = 0

    var isAtEnd: Bool { index >= bytes.count }

    mutating func byte() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func u64() -> UInt64 { (0..<8).reduce(0) { acc, _ in acc << 8 | UInt64(byte()) } }

    mutating func pick<T>(_ options: [T]) -> T { options[Int(byte()) % options.count] }

    mutating func blob(max: Int) -> [UInt8] { (0..<(Int(byte()) % (max + 1))).map { _ in byte() } }
}

/// A whole `apply` of commits built from the input and signed by known test keys (or forged),
/// against a fresh in-memory replica; then held-commit retries and releases, and the replica's
/// self-check. A thrown error is a refusal and fine; a trap or a failed self-check is a find.
struct ApplyFuzzer: Sendable {
    static let shared = ApplyFuzzer()

    /// Fixed keys, so a saved input replays the same commits.
    let signers: [NodeIdentity]
    let orgs = ["jenv", "politie", "comensha", "stranger"]
    let observer: NodeIdentity
    let registry: PartnerRegistry
    let now: UInt64 = 1_800_000_000_000

    static let records = ["al1", "al1.r01", "al1.r01.a03", "al2.r02.a01", "th1"]
    static let fields = ProgrammeSchema.fieldNames.sorted() + ["bogus"]

    private init() {
        func identity(_ seed: UInt8) -> NodeIdentity {
            NodeIdentity(privateKey: try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: seed, count: 32)))
        }
        let signers = (1...4).map { identity(UInt8($0)) }
        let orgs = self.orgs
        self.signers = signers
        observer = identity(9)
        // The fourth signer is not in the registry: its commits come from an unknown origin.
        registry = PartnerRegistry(
            nodes: (0..<3).map { PartnerRegistry.Node(org: orgs[$0], publicKey: signers[$0].publicKey, name: orgs[$0]) },
            coordinators: ["jenv"])
    }

    func run(_ input: [UInt8]) {
        let now = self.now
        let replica: Replica
        do {
            replica = try Replica(configuration: ReplicaConfiguration(
                path: ":memory:", identity: observer, org: "observer", registry: registry, now: { now }))
        } catch {
            fatalError("cannot open an in-memory replica: \(error)")
        }
        var program = Program(fuzzer: self, input: FuzzBytes(bytes: input))
        var batch: [SignedCommit] = []
        while !program.input.isAtEnd, program.made.count < 24 {
            switch program.input.byte() % 8 {
            case 0:
                _ = try? replica.apply(batch)
                batch = []
            case 1:
                _ = try? replica.retryHeld()
            case 2:
                if let held = try? replica.heldCommits(), !held.isEmpty {
                    _ = try? replica.releaseHeld(hash: held[Int(program.input.byte()) % held.count].hash)
                }
            case 3:
                // The same commit again, or an earlier one out of order.
                if !program.made.isEmpty { batch.append(program.input.pick(program.made)) }
            default:
                batch.append(program.commit())
            }
        }
        _ = try? replica.apply(batch)
        _ = try? replica.retryHeld()
        guard let report = try? replica.checkIntegrity() else { return invariant(false, "self-check throws after apply") }
        invariant(report.divergedBuckets.isEmpty, "digest buckets diverge from the winners: \(report.divergedBuckets)")
        invariant(report.missingCommits.isEmpty, "heads claim commits the log lacks: \(report.missingCommits)")
        _ = try? replica.conflicts()
        _ = try? replica.allWinners()
    }

    /// Builds commits from the input: mostly well-formed chains, sometimes forks, odd seqs,
    /// far-off stamps, stale refs and bad signatures.
    struct Program {
        let fuzzer: ApplyFuzzer
        var input: FuzzBytes
        var made: [SignedCommit] = []
        var heads: [Int: (seq: UInt64, hash: [UInt8], stamp: UInt64)] = [:]

        mutating func commit() -> SignedCommit {
            let flags = input.byte()
            let signer = Int(flags & 3)
            let identity = fuzzer.signers[signer]
            let head = heads[signer]
            var seq = (head?.seq ?? 0) + 1
            var prev = head?.hash ?? []
            switch flags >> 2 & 3 {
            case 2:  // a fork or replay of an earlier seq of this origin
                seq = UInt64(input.byte()) % seq + 1
                prev = made.last { $0.commit.origin == identity.id && $0.commit.seq == seq - 1 }?.hash ?? []
            case 3:
                seq = input.u64()
                prev = input.byte() & 1 == 0 ? [] : (0..<32).map { _ in input.byte() }
            default: break
            }
            let lastStamp = head?.stamp ?? Stamp(milliseconds: fuzzer.now - 60_000, counter: 0).rawValue
            let stamp: UInt64
            switch input.byte() % 6 {
            case 0: stamp = Stamp(milliseconds: fuzzer.now + UInt64(input.byte()) * 60_000, counter: 0).rawValue
            case 1: stamp = Stamp(milliseconds: fuzzer.now + 365 * 86_400_000, counter: UInt16(input.byte())).rawValue
            case 2: stamp = input.u64()
            default: stamp = lastStamp &+ UInt64(input.byte()) << 16 &+ 1
            }
            var ownerRefs: [String: CommitRef] = [:]
            for _ in 0..<(input.byte() % 3) { ownerRefs[record()] = ref() }
            var changes: [Change] = []
            for _ in 0..<(input.byte() % 4) {
                let field = input.pick(ApplyFuzzer.fields)
                changes.append(Change(record: record(), field: field, value: value(field),
                                      supersedes: (0..<(input.byte() % 3)).map { _ in ref() }))
            }
            let commit = Commit(origin: identity.id, seq: seq, stamp: Stamp(rawValue: stamp), author: "fuzz", prev: prev,
                                ownerRefs: ownerRefs, changes: changes)
            var signed = try! SignedCommit.sign(commit, with: identity)
            if flags & 0x80 != 0 {  // forged: the signature does not match
                var sig = signed.signature
                sig[Int(input.byte()) % sig.count] ^= 1
                signed = SignedCommit(commit: commit, canonicalBytes: signed.canonicalBytes, signature: sig)
            }
            made.append(signed)
            if flags >> 2 & 3 < 2 { heads[signer] = (seq, signed.hash, stamp) }
            return signed
        }

        mutating func record() -> String {
            let choice = Int(input.byte())
            if choice < 240 { return ApplyFuzzer.records[choice % ApplyFuzzer.records.count] }
            return String(decoding: input.blob(max: 12), as: UTF8.self)
        }

        /// A commit made earlier in this input, or one nobody made.
        mutating func ref() -> CommitRef {
            let choice = Int(input.byte())
            if choice < 200, !made.isEmpty { return made[choice % made.count].ref }
            return CommitRef(origin: input.pick(fuzzer.signers).id, seq: UInt64(input.byte()))
        }

        mutating func value(_ field: String) -> JSONValue {
            switch input.byte() % 4 {
            case 0: return .null
            case 1: return .string(String(decoding: input.blob(max: 8), as: UTF8.self))
            case 2: return (try? JSONParser.parse(input.blob(max: 24))) ?? .int(Int64(input.byte()))
            default: break
            }
            switch field {
            case "owner": return .string(input.pick(fuzzer.orgs + ["nobody"]))
            case "kind": return .string(input.pick(RecordKind.allCases.map(\.rawValue)))
            case "status": return .string(input.pick(ProgrammeStatus.allCases.map(\.rawValue)))
            case "partners": return .array([.string(input.pick(fuzzer.orgs))])
            case "number": return .int(Int64(input.byte()))
            case "deleted": return .bool(input.byte() & 1 == 1)
            case "due": return .string("2027-0\(input.byte() % 9 + 1)-1\(input.byte() % 9)")
            case "actionLine", "result": return .string(input.pick(ApplyFuzzer.records))
            default: return .string("t\(input.byte())")
            }
        }
    }
}
