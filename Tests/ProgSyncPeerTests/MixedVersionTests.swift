import Foundation
import ProgSyncCore
import Testing

/// Rolling upgrades (#13) on real daemons: a node pinned to the previous schema
/// (`PROGSYNC_SCHEMA_VERSION=1`, the real code path with an older schema) between two current
/// ones, and two nodes whose peer protocols have no version in common.
@Suite(.serialized) struct MixedVersionTests {
    @Test func anOlderNodeKeepsAndRelaysANewerSchemaAndAppliesItAfterItsUpgrade() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")])
        defer { net.tearDown() }
        // A chain: comensha hears jenv only through politie, the older node.
        net.links = ["jenv": ["politie"], "politie": ["jenv", "comensha"], "comensha": ["politie"]]
        net.nodes["politie"]!.environment["PROGSYNC_SCHEMA_VERSION"] = "1"
        try net.start("jenv", sample: true)
        try net.start("politie")
        try net.start("comensha")
        _ = try await net.waitForAgreement(timeout: 30)

        // The coordinator restructures under schema 2: a new kind and a new field.
        let (created, createdBody) = try await net.request("jenv", "PUT", "/v1/records/al1.p1", [
            "kind": "project", "actionLine": "al1", "number": 1, "title": "Bewustwordingscampagne 2023",
        ])
        #expect(created == 201 || created == 200, "\(createdBody)")
        let (closed, closedBody) = try await net.request("jenv", "PATCH", "/v1/records/al1.r01", ["closed": "2023-06-30"])
        #expect(closed == 200, "\(closedBody)")

        // politie (schema 1) holds them visibly, relays them, and every digest agrees.
        _ = try await net.waitForAgreement(timeout: 30)
        let quarantine = try await net.request("politie", "GET", "/v1/quarantine").1
        let waiting = quarantine["newerSchema"]?.arrayValue ?? []
        #expect(waiting.count == 2 && waiting.allSatisfy { $0["needsSchema"]?.intValue == Int64(ProgrammeSchema.current) && $0["reason"] == "newer-schema" }, "\(quarantine)")
        let politieStatus = try await net.request("politie", "GET", "/v1/status").1
        #expect(politieStatus["versions"]?["schema"] == 1, "\(politieStatus)")
        let notes = politieStatus["versions"]?["notes"]?.arrayValue?.compactMap(\.stringValue) ?? []
        #expect(notes.contains("2 commits wait for schema \(ProgrammeSchema.current); upgrade progsync on this node"), "\(notes)")
        #expect(notes.contains { $0.contains("partner jenv is ahead: schema \(ProgrammeSchema.current)") }, "\(notes)")
        // jenv learns politie's versions from its own hello, which may still be backing off from
        // the moment politie was not yet listening; agreement can come first through politie's pulls.
        var jenvNotes: [String] = [], peers: [JSONValue] = []
        let greeted = try await eventually(20) {
            jenvNotes = try await net.request("jenv", "GET", "/v1/status").1["versions"]?["notes"]?.arrayValue?.compactMap(\.stringValue) ?? []
            peers = try await net.request("jenv", "GET", "/v1/peers").1["peers"]?.arrayValue ?? []
            return jenvNotes.contains { $0.contains("partner politie is behind: schema 1") } && peers.first?["schema"] == 1
        }
        #expect(greeted, "\(peers)")
        #expect(jenvNotes.contains { $0.contains("partner politie is behind: schema 1") }, "\(jenvNotes)")
        #expect(peers.first?["schema"] == 1 && peers.first?["protocol"] == "2", "\(peers)")

        // comensha (schema 2) applied what came through politie: the signatures held end to end.
        let project = try await net.request("comensha", "GET", "/v1/records/al1.p1").1
        #expect(project["fields"]?["kind"] == "project", "\(project)")
        let comenshaQuarantine = try await net.request("comensha", "GET", "/v1/quarantine").1
        #expect(comenshaQuarantine["newerSchema"]?.arrayValue?.isEmpty == true, "\(comenshaQuarantine)")
        #expect(try await net.request("comensha", "GET", "/v1/status").1["rejected"] == 0)

        // The upgrade: politie restarts without the pin and applies everything, no operator action.
        net.stop("politie")
        net.nodes["politie"]!.environment["PROGSYNC_SCHEMA_VERSION"] = nil
        try net.start("politie")
        let upgraded = try await net.request("politie", "GET", "/v1/quarantine").1
        #expect(upgraded["newerSchema"]?.arrayValue?.isEmpty == true, "\(upgraded)")
        let after = try await net.request("politie", "GET", "/v1/status").1
        #expect(after["versions"]?["schema"]?.intValue == Int64(ProgrammeSchema.current) && after["rejected"] == 0, "\(after)")
        _ = try await net.waitForAgreement(timeout: 30)
    }

    @Test func partnersWithNoCommonProtocolVersionRefuseEachOtherPlainlyAndApplyNothing() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        net.nodes["politie"]!.environment["PROGSYNC_TEST_PEER_PROTOCOL"] = "3-3"
        try net.start("jenv", sample: true)
        try net.start("politie")

        func lastError(_ name: String) async throws -> String {
            try await net.request(name, "GET", "/v1/peers").1["peers"]?.arrayValue?.first?["lastError"]?.stringValue ?? ""
        }
        var jenvError = "", politieError = ""
        let reported = try await eventually(20) {
            jenvError = try await lastError("jenv")
            politieError = try await lastError("politie")
            return jenvError.contains("peer protocol mismatch") && politieError.contains("peer protocol mismatch")
        }
        #expect(reported, "jenv: \(jenvError) / politie: \(politieError)")
        // jenv speaks 2 and politie accepts only 3: jenv is the one to upgrade, and both say so.
        #expect(jenvError.contains("upgrade progsync on"), "\(jenvError)")
        #expect(jenvError.contains("this node") || jenvError.contains("your node"), "\(jenvError)")
        #expect(politieError.contains("upgrade progsync on partner jenv"), "\(politieError)")
        let politieStatus = try await net.request("politie", "GET", "/v1/status").1
        #expect(politieStatus["records"]?["total"] == 0, "nothing of jenv's programme was applied: \(politieStatus)")
        #expect(try await net.digest("politie") != net.digest("jenv"))
    }
}
