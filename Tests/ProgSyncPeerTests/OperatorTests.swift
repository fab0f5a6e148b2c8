import Foundation
import ProgSyncCore
import Testing

/// What an operator does by hand, end to end with the real `progsync` and `progsyncd`: settle
/// conflicts (CLI and API), carry commits since a time in a bundle, and release a held commit.
/// The two nodes have no network between them; bundles carry everything.
@Suite(.serialized) struct OperatorTests {
    func cli(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try PeerNetwork.run(PeerNetwork.locate("progsync"), arguments)
    }

    /// `bundle export --peer` on one node, `bundle import` on the other, both with the CLI.
    func carry(_ net: PeerNetwork, from: String, to: String) throws {
        let file = net.root + "/\(from)-naar-\(to)-\(UUID().uuidString.prefix(6)).psb"
        let export = try cli(["bundle", "export", "--socket", net.nodes[from]!.socket, "--peer", to, "-o", file])
        try #require(export.status == 0, "\(export.output)")
        let imported = try cli(["bundle", "import", "--socket", net.nodes[to]!.socket, file])
        try #require(imported.status == 0, "\(imported.output)")
        #expect(imported.output.contains(" 0 held, 0 rejected"), "\(imported.output)")
    }

    func conflictIDs(_ net: PeerNetwork, _ name: String) async throws -> [String] {
        let (status, body) = try await net.request(name, "GET", "/v1/conflicts")
        try #require(status == 200, "\(body)")
        return try #require(body["conflicts"]?.arrayValue, "\(body)").compactMap { $0["id"]?.stringValue }.sorted()
    }

    func fields(_ net: PeerNetwork, _ name: String, _ record: String) async throws -> JSONValue {
        let (status, body) = try await net.request(name, "GET", "/v1/records/\(record)")
        try #require(status == 200, "\(name) \(record): \(body)")
        return try #require(body["fields"], "\(body)")
    }

    @Test func conflictsAreResolvedByCLIAndAPIAndBundlesCarrySinceATime() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        net.links = ["jenv": [], "politie": []]
        try net.start("jenv")
        try net.start("politie")

        // The coordinator creates a politie record; politie gets it by bundle.
        let (created, body) = try await net.request("jenv", "PUT", "/v1/records/op.a1", [
            "kind": "activity", "result": "op", "number": 1, "title": "Werkbezoek", "owner": "politie", "status": "not-started",
        ])
        try #require(created == 201, "\(body)")
        try carry(net, from: "jenv", to: "politie")
        #expect(try await fields(net, "politie", "op.a1")["title"] == "Werkbezoek")

        // Both change status and title while apart: two conflicts, the same on both nodes.
        _ = try await net.write("jenv", "op.a1", "status", "delayed")
        _ = try await net.write("jenv", "op.a1", "title", "Werkbezoek (jenv)")
        _ = try await net.write("politie", "op.a1", "status", "completed")
        _ = try await net.write("politie", "op.a1", "title", "Werkbezoek (politie)")
        try carry(net, from: "jenv", to: "politie")
        try carry(net, from: "politie", to: "jenv")
        #expect(try await conflictIDs(net, "jenv") == ["op.a1~status", "op.a1~title"])
        #expect(try await conflictIDs(net, "politie") == ["op.a1~status", "op.a1~title"])
        let listed = try cli(["conflicts", "list", "--socket", net.nodes["politie"]!.socket])
        #expect(listed.status == 0 && listed.output.contains("op.a1~status"), "\(listed.output)")

        // politie settles status with the CLI, keeping the losing value.
        let conflicts = try #require(try await net.request("politie", "GET", "/v1/conflicts").1["conflicts"]?.arrayValue)
        let statusConflict = try #require(conflicts.first { $0["id"] == "op.a1~status" })
        let versions = try #require(statusConflict["versions"]?.arrayValue)
        try #require(versions.count == 2, "\(statusConflict)")
        let loser = try #require(versions[1]["value"], "\(versions)")
        #expect(versions[0]["value"] != loser)
        let resolved = try cli(["conflicts", "resolve", "op.a1~status", "--pick", "1", "--socket", net.nodes["politie"]!.socket])
        #expect(resolved.status == 0, "\(resolved.output)")
        #expect(resolved.output.contains("resolved conflict op.a1~status"), "\(resolved.output)")
        #expect(try await fields(net, "politie", "op.a1")["status"] == loser)
        #expect(try await conflictIDs(net, "politie") == ["op.a1~title"])

        // jenv settles title through the API with a new value.
        let (settled, answer) = try await net.request("jenv", "POST", "/v1/conflicts/op.a1~title/resolve", ["value": "Werkbezoek (samen)"])
        #expect(settled == 200, "\(answer)")
        #expect(answer["record"]?["fields"]?["title"] == "Werkbezoek (samen)", "\(answer)")
        #expect(try await conflictIDs(net, "jenv") == ["op.a1~status"])

        // Each resolution supersedes every competing version: once exchanged, no conflict is left.
        try carry(net, from: "jenv", to: "politie")
        try carry(net, from: "politie", to: "jenv")
        for name in net.order {
            #expect(try await conflictIDs(net, name) == [], "\(name)")
            let f = try await fields(net, name, "op.a1")
            #expect(f["status"] == loser && f["title"] == "Werkbezoek (samen)", "\(name): \(f)")
        }
        #expect(try await net.digest("jenv") == net.digest("politie"))

        // `bundle export --since`: just the commits stamped at or after the time given.
        let clock = try #require(try await net.request("jenv", "GET", "/v1/status").1["clock"]?.stringValue.flatMap { Stamp(hex: $0) })
        let after = try await net.write("jenv", "op.a1", "explanation", "na de peiling")
        let since = String(Stamp(rawValue: clock.rawValue + 1).hex)
        let file = net.root + "/sinds.psb"
        let export = try cli(["bundle", "export", "--socket", net.nodes["jenv"]!.socket, "--since", since, "-o", file])
        #expect(export.status == 0 && export.output.contains("wrote \(file): 1 commit,"), "\(export.output)")
        let bundle = try CommitBundle(decoding: [UInt8](try Data(contentsOf: URL(fileURLWithPath: file))))
        let carried = try bundle.commits.map { try SignedCommit(canonicalBytes: $0.body, signature: $0.signature).commit }
        #expect(carried.map(\.seq) == [UInt64(after.seq)] && carried.first?.origin.rawValue == after.origin, "\(carried)")
        #expect(carried.first?.changes.map(\.field) == ["explanation"])
        let imported = try cli(["bundle", "import", "--socket", net.nodes["politie"]!.socket, file])
        #expect(imported.status == 0 && imported.output.contains("1 commits: 1 new"), "\(imported.output)")
        #expect(try await fields(net, "politie", "op.a1")["explanation"] == "na de peiling")

        // A date before everything carries every commit jenv holds.
        let everything = try cli(["bundle", "export", "--socket", net.nodes["jenv"]!.socket, "--since", "2020-01-01", "-o", file])
        let vector = try await net.request("jenv", "GET", "/v1/status").1["versionVector"]?.objectValue ?? [:]
        let total = vector.values.compactMap(\.intValue).reduce(0, +)
        #expect(total > 1 && everything.status == 0 && everything.output.contains("wrote \(file): \(total) commits,"), "\(everything.output) \(vector)")
    }

    @Test func heldCommitIsReleasedWithTheCLI() async throws {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        try #require(path.contains { FileManager.default.isExecutableFile(atPath: "\($0)/faketime") },
                     "faketime is not installed: run scripts/setup.sh --test (or apt-get install faketime); this test needs it")
        let net = try PeerNetwork([("jenv", "jenv"), ("snel", "politie")])
        defer { net.tearDown() }
        net.links = ["jenv": [], "snel": []]
        // An hour ahead: jenv holds snel's commits (the guard allows 5 minutes).
        net.nodes["snel"]!.launchPrefix = ["faketime", "-f", "+1h"]
        try net.start("jenv")
        try net.start("snel")
        let (created, body) = try await net.request("snel", "PUT", "/v1/records/snel.a1", [
            "kind": "activity", "result": "snel", "number": 1, "title": "Snel",
        ])
        try #require(created == 201, "\(body)")

        let file = net.root + "/snel.psb"
        let export = try cli(["bundle", "export", "--socket", net.nodes["snel"]!.socket, "--peer", "jenv", "-o", file])
        try #require(export.status == 0, "\(export.output)")
        let imported = try cli(["bundle", "import", "--socket", net.nodes["jenv"]!.socket, file])
        #expect(imported.status == 0 && imported.output.contains("1 held"), "\(imported.output)")
        let held = try #require(try await net.request("jenv", "GET", "/v1/quarantine").1["held"]?.arrayValue)
        try #require(held.count == 1 && held[0]["reason"] == "clock-ahead", "\(held)")
        let hash = try #require(held[0]["hash"]?.stringValue)
        #expect(try await net.request("jenv", "GET", "/v1/records/snel.a1").0 == 404)

        let listed = try cli(["quarantine", "list", "--socket", net.nodes["jenv"]!.socket])
        #expect(listed.status == 0 && listed.output.contains("clock-ahead"), "\(listed.output)")
        let released = try cli(["quarantine", "release", String(hash.prefix(8)), "--socket", net.nodes["jenv"]!.socket])
        #expect(released.status == 0, "\(released.output)")
        #expect(released.output.contains("released \(hash.prefix(16)): 1 applied, 0 still held, 0 rejected"), "\(released.output)")
        #expect(try await fields(net, "jenv", "snel.a1")["title"] == "Snel")
        #expect(try await net.request("jenv", "GET", "/v1/quarantine").1["held"] == [])
        // Released once, gone: a second release finds nothing and says so.
        let again = try cli(["quarantine", "release", String(hash.prefix(8)), "--socket", net.nodes["jenv"]!.socket])
        #expect(again.status == 1 && again.output.contains("no held commit"), "\(again.output)")
    }
}
