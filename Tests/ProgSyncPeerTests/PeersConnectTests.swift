import Foundation
import ProgSyncCore
import Testing

/// `peers.connect` (#12): a small organisation dials only the hub; relaying carries the rest.
@Suite(.serialized) struct PeersConnectTests {
    @Test func spokesDialOnlyTheHubAndStillConverge() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")])
        defer { net.tearDown() }
        for spoke in ["politie", "comensha"] { net.nodes[spoke]!.environment["PROGSYNC_PEERS_CONNECT"] = "jenv" }
        try net.start("jenv", sample: true)
        try net.start("politie")
        try net.start("comensha")
        for spoke in ["politie", "comensha"] {
            let peers = try await net.request(spoke, "GET", "/v1/peers").1["peers"]?.arrayValue ?? []
            #expect(peers.map { $0["name"] } == ["jenv"], "\(spoke) dials only the hub: \(peers)")
        }
        _ = try await net.waitForAgreement(timeout: 30)
        let (created, body) = try await net.request("politie", "PUT", "/v1/records/pol.1", [
            "kind": "activity", "result": "al1.r01", "number": 901, "title": "Via de hub", "owner": "politie",
        ])
        #expect(created == 201 || created == 200, "\(body)")
        let arrived = try await eventually(10) {
            try await net.request("comensha", "GET", "/v1/records/pol.1").1["fields"]?["title"] == "Via de hub"
        }
        #expect(arrived, "politie's change reached comensha through jenv")
    }

    @Test func anUnknownNameStopsTheStartWithTheKnownNames() throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        net.nodes["politie"]!.environment["PROGSYNC_PEERS_CONNECT"] = "hub"
        #expect(throws: (any Error).self) { try net.start("politie") }
        #expect(net.log("politie").contains("peers.connect names hub, which is no other node in the registry (known: jenv)"),
                "\(net.log("politie").suffix(500))")
    }
}
