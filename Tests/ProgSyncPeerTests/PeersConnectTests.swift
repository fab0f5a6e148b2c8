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

    /// One dialler per pair (#12): the hub stands by for a spoke that dials it, of two nodes
    /// that both dial everyone one stands by, changes still travel both ways at once, and a
    /// partner that stops dialling is dialled again.
    @Test func eachPairHasOneDiallerAndAQuietPartnerIsDialledAgain() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")])
        defer { net.tearDown() }
        net.nodes["comensha"]!.environment["PROGSYNC_PEERS_CONNECT"] = "jenv"
        try net.start("jenv", sample: true)
        try net.start("politie")
        try net.start("comensha")
        _ = try await net.waitForAgreement(timeout: 30)
        func dialler(_ node: String, _ partner: String) async throws -> String? {
            let peers = try await net.request(node, "GET", "/v1/peers").1["peers"]?.arrayValue ?? []
            return peers.first { $0["name"]?.stringValue == partner }?["dialler"]?.stringValue
        }
        // A long poll lasts 20 s: the side that stands by sees the other's at the end of its own.
        let settled = try await eventually(60) {
            let pair = [try await dialler("jenv", "politie"), try await dialler("politie", "jenv")]
            return try await dialler("jenv", "comensha") == "partner" && pair.contains("partner") && pair.contains("this node")
        }
        #expect(settled, "jenv stands by for comensha, and one of jenv and politie for the other")
        #expect(try await dialler("comensha", "jenv") == "this node")
        // Both ways through the one dialler: jenv's change reaches comensha by comensha's long
        // poll, comensha's reaches jenv by its push and politie through jenv.
        let (jenvWrote, _) = try await net.request("jenv", "PATCH", "/v1/records/al1.r01.a01", ["explanation": "van jenv"])
        #expect(jenvWrote == 200)
        let (comenshaWrote, body) = try await net.request("comensha", "PUT", "/v1/records/com.1", [
            "kind": "activity", "result": "al1.r01", "number": 902, "title": "Van CoMensha", "owner": "comensha",
        ])
        #expect(comenshaWrote == 201 || comenshaWrote == 200, "\(body)")
        let travelled = try await eventually(5) {
            let atComensha = try await net.request("comensha", "GET", "/v1/records/al1.r01.a01").1["fields"]?["explanation"]
            let atPolitie = try await net.request("politie", "GET", "/v1/records/com.1").1["fields"]?["title"]
            return atComensha == "van jenv" && atPolitie == "Van CoMensha"
        }
        #expect(travelled)
        let (synced, sync) = try await net.request("jenv", "POST", "/v1/sync?timeout=20")
        #expect(synced == 200 && sync["caughtUp"] == true, "\(sync)")
        // comensha stops: jenv dials it again, and shows why it cannot reach it.
        net.stop("comensha")
        let redialled = try await eventually(40) { try await dialler("jenv", "comensha") == "this node" }
        #expect(redialled, "jenv dials comensha again once its long polls stop")
        #expect(net.log("jenv").contains("partner no longer dials this node: dialling it again"))
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
