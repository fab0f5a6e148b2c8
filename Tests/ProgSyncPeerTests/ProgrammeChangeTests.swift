import Foundation
import ProgSyncCore
import Testing

/// The programme changes under the coordinator's hand (#13, the 2023 recalibration): archive,
/// reopen, move and reword with the CLI on the coordinator's node; every change replicates and
/// the history keeps every earlier value.
@Suite(.serialized) struct ProgrammeChangeTests {
    @Test func archiveMoveRewordAndReopenReplicateWithTheirHistory() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        try net.start("jenv", sample: true)
        try net.start("politie")
        _ = try await net.waitForAgreement(timeout: 30)
        let before = try await net.request("jenv", "GET", "/v1/records/al1.r01.a02").1["fields"]?["result"]
        #expect(before == "al1.r01")

        func set(_ args: [String]) throws {
            let result = try PeerNetwork.run(PeerNetwork.locate("progsync"),
                                             ["records", "set"] + args + ["--socket", net.nodes["jenv"]!.socket])
            #expect(result.status == 0, "records set \(args): \(result.output)")
        }
        try set(["al1.r01", "closed=2022-12-31"])
        try set(["al1.r01.a02", "result=al1.r02"])
        try set(["al1", "title=Doorontwikkeling en herijking basis aanpak"])
        try set(["al1.p1", "kind=project", "actionLine=al1", "number=1", "title=Bewustwordingscampagne 2023"])
        try set(["al1.r01", "closed="])

        _ = try await net.waitForAgreement(timeout: 30)
        let moved = try await net.request("politie", "GET", "/v1/records/al1.r01.a02").1
        #expect(moved["fields"]?["result"] == "al1.r02", "\(moved)")
        #expect(try await net.request("politie", "GET", "/v1/records/al1").1["fields"]?["title"] == "Doorontwikkeling en herijking basis aanpak")
        #expect(try await net.request("politie", "GET", "/v1/records/al1.p1").1["fields"]?["kind"] == "project")

        // Closed, then reopened: both changes are in the history on the partner, in order.
        let history = try await net.request("politie", "GET", "/v1/records/al1.r01/history").1["history"]?.arrayValue ?? []
        let closedValues = history.flatMap { entry in
            (entry["changes"]?.arrayValue ?? []).filter { $0["field"] == "closed" }.map { $0["value"] ?? .null }
        }
        #expect(closedValues == ["2022-12-31", .null], "\(history)")
        #expect(try await net.request("politie", "GET", "/v1/records/al1.r01").1["fields"]?["closed"] == nil, "reopened: no closed value shown")
        let movedHistory = try await net.request("politie", "GET", "/v1/records/al1.r01.a02/history").1["history"]?.arrayValue ?? []
        let results = movedHistory.flatMap { ($0["changes"]?.arrayValue ?? []).filter { $0["field"] == "result" }.map { $0["value"] ?? .null } }
        #expect(results == ["al1.r01", "al1.r02"], "\(movedHistory)")
    }
}
