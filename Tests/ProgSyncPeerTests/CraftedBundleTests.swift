import Foundation
import ProgSyncCore
import ProgSyncHTTPClient
import Testing

/// Crafted bundle files against a real `progsyncd`, through `POST /v1/bundle` and the CLI's
/// `bundle import`. The many-case checks (200 cuts and flips, each forged header) run in process
/// in BundleImportTests; here each kind is tried once end to end.
@Suite(.serialized) struct CraftedBundleTests {
    func post(_ net: PeerNetwork, _ name: String, _ bytes: [UInt8]) async throws -> (Int, JSONValue) {
        let response = try await net.nodes[name]!.client.send(HTTPClientRequest(method: "POST", url: "http://localhost/v1/bundle", body: bytes))
        return (response.status, (try? JSONParser.parse(response.body)) ?? .null)
    }

    func exportCount(_ net: PeerNetwork, _ name: String, peer: String) async throws -> Int {
        let response = try await net.nodes[name]!.client.send(HTTPClientRequest(method: "GET", url: "http://localhost/v1/bundle?peer=\(peer)"))
        #expect(response.status == 200)
        return Int(response.headers.first { $0.name.lowercased() == "x-progsync-commits" }?.value ?? "") ?? -1
    }

    /// The daemon's peak resident memory (VmHWM), in MiB.
    func peakMemoryMiB(_ net: PeerNetwork, _ name: String) throws -> Int {
        let pid = try #require(net.nodes[name]?.process?.processIdentifier)
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") })
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) >> 10
    }

    @Test func forgedHeadersAndABombAgainstARealDaemon() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        net.links = ["jenv": [], "politie": []]
        try net.start("jenv", sample: true)
        try net.start("politie")
        let (created, _) = try await net.request("politie", "PUT", "/v1/records/pol.1", ["kind": "activity", "result": "al1.r01", "number": 901, "title": "Eigen werk", "owner": "politie"])
        #expect(created == 201)
        let owed = try await exportCount(net, "jenv", peer: "politie")
        #expect(owed > 0, "the coordinator's sample programme is what politie lacks")

        // politie's genuine bundle, re-made with a header claiming politie holds everything.
        let genuine = try await net.nodes["politie"]!.client.send(HTTPClientRequest(method: "GET", url: "http://localhost/v1/bundle?all=true"))
        var lie = try CommitBundle(decoding: genuine.body)
        var header = try #require(lie.header.objectValue)
        header["versionVector"] = .object([net.nodes["jenv"]!.id: 1_000_000, net.nodes["politie"]!.id: 1_000_000])
        lie.header = .object(header)

        // Unsigned (as progsync wrote bundles before they were signed), through the CLI: the
        // commit is imported, the vector is not believed.
        let file = net.root + "/vervalst.psb"
        try Data(try lie.encodedFormat1()).write(to: URL(fileURLWithPath: file))
        let imported = try PeerNetwork.run(PeerNetwork.locate("progsync"), ["bundle", "import", "--socket", net.nodes["jenv"]!.socket, file])
        #expect(imported.status == 0, "\(imported.output)")
        #expect(imported.output.contains("1 commits: 1 new") && imported.output.contains("header not verified"), "\(imported.output)")
        #expect(try await exportCount(net, "jenv", peer: "politie") == owed + 1, "the unsigned header stopped the export")

        // Sealed by a key that is not politie's: refused whole.
        let before = try await net.digest("jenv")
        let (status, body) = try await post(net, "jenv", try lie.encoded(signedBy: NodeIdentity()))
        #expect(status == 422 && body["error"] == "bad-bundle", "\(body)")
        #expect(body["message"]?.stringValue?.contains("registered key") == true, "\(body)")
        #expect(try await net.digest("jenv") == before)
        #expect(try await exportCount(net, "jenv", peer: "politie") == owed + 1)

        // politie's own sealed bundle is believed: it lacks the coordinator's commits.
        let (sealedStatus, sealed) = try await post(net, "jenv", genuine.body)
        #expect(sealedStatus == 200 && sealed["headerVerified"] == true && sealed["alreadyKnown"] == 1, "\(sealed)")
        #expect(try await exportCount(net, "jenv", peer: "politie") == owed)

        // An unsigned commit from nobody with seq 2^63 (it once trapped the daemon): refused whole.
        let junk = Commit(origin: NodeIdentity().id, seq: 1 << 63, stamp: Stamp(milliseconds: 1_800_000_000_000, counter: 0),
                          author: "x", prev: [UInt8](repeating: 7, count: 32), changes: [Change(record: "al1", field: "title", value: "x")])
        var crafted = try CommitBundle(decoding: genuine.body)
        crafted.commits.append((junk.canonicalBytes, [UInt8](repeating: 0, count: 64)))
        let (junkStatus, junkBody) = try await post(net, "jenv", try crafted.encodedFormat1())
        #expect(junkStatus == 422 && junkBody["error"] == "bad-bundle", "\(junkBody)")
        #expect(try await net.request("jenv", "GET", "/v1/status").0 == 200, "the daemon should still answer")

        // A gzip bomb: one commit claiming 2 GiB, then 2 GiB of zeros in about 2 MiB.
        var deflater = try Gzip.Deflater(level: 9)
        try deflater.write(JSONValue.object(["node": .string(net.nodes["politie"]!.id)]).canonicalBytes + [UInt8(ascii: "\n"), 0x7f, 0xff, 0xff, 0xff])
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        for _ in 0..<2048 { try deflater.write(zeros) }
        let bomb = CommitBundle.unsignedMagic + (try deflater.finish())
        #expect(bomb.count > 1 << 20 && bomb.count < 3 << 20, "\(bomb.count) bytes")
        let peakBefore = try peakMemoryMiB(net, "jenv")
        let (bombStatus, bombBody) = try await post(net, "jenv", bomb)
        #expect(bombStatus == 422 && bombBody["error"] == "bad-bundle", "\(bombBody)")
        #expect(bombBody["message"]?.stringValue?.contains("decompression bomb") == true, "\(bombBody)")
        let peakAfter = try peakMemoryMiB(net, "jenv")
        #expect(peakAfter < max(peakBefore, 64) + 256, "the daemon's peak memory went from \(peakBefore) to \(peakAfter) MiB")
        #expect(try await net.request("jenv", "GET", "/v1/status").0 == 200, "the daemon should still answer")
        #expect(try await net.digest("jenv") == before)
    }
}
