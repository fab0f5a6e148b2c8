import Foundation
import ProgSyncCore
import ProgSyncHTTPClient
import Testing

/// Membership as signed data (#12) on real daemons over mutual TLS: a node outside every
/// registry is admitted by the coordinator's `progsync partners add`, the admission travels a
/// relay chain, the listener takes the new pin without a restart, and `partners remove` retires
/// the node everywhere: its TLS is refused live and a relayed bundle cannot bring it back.
@Suite(.serialized) struct MembershipPeerTests {
    static let progsync = PeerNetwork.locate("progsync")

    func cli(_ net: PeerNetwork, _ node: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try PeerNetwork.run(Self.progsync, arguments + ["--socket", net.nodes[node]!.socket])
    }

    func partner(_ net: PeerNetwork, on node: String, _ id: String) async throws -> JSONValue? {
        let (status, body) = try await net.request(node, "GET", "/v1/partners/\(id)")
        return status == 200 ? body : nil
    }

    @Test func aCoordinatorAdmitsAndRetiresANodeAndEveryNodeFollows() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha"), ("laptop", "politie")])
        defer { net.tearDown() }
        net.outsiders = ["laptop"]
        // A chain: jenv — politie — comensha; the laptop dials the coordinator only.
        net.links = ["jenv": ["politie"], "politie": ["jenv", "comensha"], "comensha": ["politie"], "laptop": ["jenv"]]
        for name in ["jenv", "politie", "comensha", "laptop"] { try net.start(name, sample: name == "jenv") }
        _ = try await net.waitForAgreement(["jenv", "politie", "comensha"], timeout: 30)
        let laptop = net.nodes["laptop"]!

        // Outside the partnership, the laptop's work reaches no one; carried by hand it is held.
        let (created, _) = try await net.request("laptop", "PUT", "/v1/records/lap.1",
                                                 ["kind": "activity", "result": "al1.r01", "number": 950, "title": "Veldwerk", "owner": "politie"])
        #expect(created == 201)
        let bundle = net.root + "/laptop.bundle"
        #expect(try cli(net, "laptop", ["bundle", "export", "--all", "-o", bundle]).status == 0)
        let imported = try cli(net, "comensha", ["bundle", "import", bundle])
        #expect(imported.status == 0 && imported.output.contains("1 held"), "\(imported.output)")
        #expect(try await net.request("comensha", "GET", "/v1/records/lap.1").0 == 404)

        // Not a coordinator: politie may not admit anyone.
        let request = net.root + "/laptop-request.json"
        try JSONValue.object([
            "progsyncJoinRequest": 1, "node": .string(laptop.id), "org": "politie", "name": "laptop",
            "publicKey": .string(laptop.publicKey), "certificatePin": .string(laptop.pin), "address": .string("https://\(laptop.host):\(laptop.port)"),
        ]).prettyString().write(toFile: request, atomically: true, encoding: .utf8)
        let refused = try cli(net, "politie", ["partners", "add", request])
        #expect(refused.status != 0 && refused.output.contains("only a coordinator"), "\(refused.output)")

        // The coordinator admits it: every node follows, the held commit applies by itself, and
        // jenv's listener takes the laptop's certificate without a restart.
        let added = try cli(net, "jenv", ["partners", "add", request])
        #expect(added.status == 0 && added.output.contains("admitted \(laptop.id)"), "\(added.output)")
        for node in ["politie", "comensha"] {
            #expect(try await eventually(15) { try await partner(net, on: node, laptop.id)?["state"] == "active" }, "\(node) admits the laptop")
        }
        #expect(try await eventually(15) {
            try await net.request("comensha", "GET", "/v1/records/lap.1").1["fields"]?["title"] == "Veldwerk"
        }, "the commit held on comensha applied once the admission arrived")
        #expect(try await eventually(30) {
            try await net.request("jenv", "GET", "/v1/records/lap.1").1["fields"]?["title"] == "Veldwerk"
        }, "the laptop got through to jenv once admitted: \(net.log("laptop").suffix(1500))")
        // The admission carried the laptop's address: the others dial it too, without a restart.
        func peerState(_ node: String) async throws -> String? {
            try await net.request(node, "GET", "/v1/peers").1["peers"]?.arrayValue?.first { $0["node"]?.stringValue == laptop.id }?["state"]?.stringValue
        }
        for node in ["jenv", "comensha"] {
            let dialled = try await eventually(15) { try await peerState(node) == "up" }
            let seen = try await net.request(node, "GET", "/v1/peers").1
            #expect(dialled, "\(node) dials the admitted laptop: \(seen)")
        }
        let log = try cli(net, "jenv", ["partners", "log"])
        #expect(log.status == 0 && log.output.contains("node:\(laptop.id).publicKey"), "\(log.output)")

        // Removed: its past stays, its TLS is refused at once, its later work is refused everywhere.
        let removed = try cli(net, "jenv", ["partners", "remove", "laptop"])
        #expect(removed.status == 0 && removed.output.contains("retired \(laptop.id)"), "\(removed.output)")
        for node in ["politie", "comensha"] {
            #expect(try await eventually(15) { try await partner(net, on: node, laptop.id)?["state"] == "retired" }, "\(node) retires the laptop")
        }
        #expect(try await net.request("comensha", "GET", "/v1/records/lap.1").1["fields"]?["title"] == "Veldwerk", "its past stays valid")
        for node in ["jenv", "comensha"] {
            let stopped = try await eventually(10) { try await peerState(node) == "retired" }
            #expect(stopped, "\(node) stopped dialling the retired laptop")
        }
        // jenv's listener refuses the laptop's certificate at once, without a restart. (The laptop
        // may not be the one dialling jenv: one side of a pair stands by, `PairDialling`.)
        let jenv = net.nodes["jenv"]!
        let asLaptop = try HTTPClient(configuration: .init(requestTimeout: .seconds(10), tls: .init(
            clientCertificatePath: laptop.folder + "/tls-cert.pem", clientKeyPath: laptop.folder + "/tls-key.pem",
            pinnedPublicKey: jenv.pin, verifyPeer: false, verifyHost: false)))
        let refusedLive = try await eventually(5) {
            let status = try? await asLaptop.send(HTTPClientRequest(url: "https://127.0.0.1:\(jenv.port)/v1/peer/hello").asPartner()).status
            return status == nil || status == 403
        }
        #expect(refusedLive, "jenv's listener refuses the retired pin without a restart")
        _ = try await net.request("laptop", "PATCH", "/v1/records/lap.1", ["title": "Na verwijdering"])
        // A relay cannot bring it back: its bundle, admission included, changes nothing.
        #expect(try cli(net, "laptop", ["bundle", "export", "--all", "-o", bundle]).status == 0)
        let relayed = try cli(net, "comensha", ["bundle", "import", bundle])
        #expect(relayed.status == 0, "\(relayed.output)")
        #expect(try await partner(net, on: "comensha", laptop.id)?["state"] == "retired")
        #expect(try await net.request("comensha", "GET", "/v1/records/lap.1").1["fields"]?["title"] == "Veldwerk")
        _ = try await net.waitForAgreement(["jenv", "politie", "comensha"], timeout: 30)
    }

    /// `progsyncd rotate-key` on politie's node; the coordinator admits the new key and retires
    /// the old one in one commit; politie's records stay editable, since ownership is per org.
    @Test func aRotatedKeyKeepsItsOrganisationsRecords() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")])
        defer { net.tearDown() }
        for name in ["jenv", "politie", "comensha"] { try net.start(name, sample: name == "jenv") }
        _ = try await net.waitForAgreement(timeout: 30)
        let before = try await net.request("politie", "PATCH", "/v1/records/al1.r01.a10", ["status": "delayed"])
        #expect(before.0 == 200, "\(before.1)")
        _ = try await net.waitForAgreement(timeout: 30)

        let politie = net.nodes["politie"]!
        let request = net.root + "/politie-rotate.json"
        let whileRunning = try PeerNetwork.run(PeerNetwork.progsyncd, ["rotate-key", "--data-dir", politie.folder, "--request", request])
        #expect(whileRunning.status != 0, "refused while the daemon holds the folder: \(whileRunning.output)")
        net.stop("politie")
        let rotated = try PeerNetwork.run(PeerNetwork.progsyncd, [
            "rotate-key", "--data-dir", politie.folder, "--address", "https://\(politie.host):\(politie.port)", "--request", request])
        #expect(rotated.status == 0 && rotated.output.contains("old node:    \(politie.id)"), "\(rotated.output)")
        let newID = try #require(try JSONParser.parse([UInt8](FileManager.default.contents(atPath: request)!))["node"]?.stringValue)
        #expect(newID != politie.id)
        try net.start("politie")
        let added = try cli(net, "jenv", ["partners", "add", request])
        #expect(added.status == 0 && added.output.contains("admitted \(newID)"), "\(added.output)")
        #expect(try await partner(net, on: "jenv", politie.id)?["state"] == "retired", "the old key is retired in the same commit")

        // Under its new key politie still edits its own activity, and the partners apply it.
        let after = try await net.request("politie", "PATCH", "/v1/records/al1.r01.a10", ["status": "completed"])
        #expect(after.0 == 200, "\(after.1)")
        for node in ["jenv", "comensha"] {
            let arrived = try await eventually(30) {
                try await net.request(node, "GET", "/v1/records/al1.r01.a10").1["fields"]?["status"] == "completed"
            }
            #expect(arrived, "\(node) applied the edit made under the new key: \(net.log("politie").suffix(1500))")
        }
        let author = try await net.request("comensha", "GET", "/v1/records/al1.r01.a10").1["versions"]?["status"]?["origin"]
        #expect(author?.stringValue == newID, "\(String(describing: author))")
        _ = try await net.waitForAgreement(timeout: 30)
    }

    /// `partners revoke --after SEQ` on daemons (a stolen key): what the node signed beyond SEQ is
    /// undone on every node and listed as withheld for people to enter again; what came before stays.
    @Test func aRevokedNodesLaterCommitsAreUndoneEverywhereAndListed() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")])
        defer { net.tearDown() }
        for name in ["jenv", "politie", "comensha"] { try net.start(name, sample: name == "jenv") }
        _ = try await net.waitForAgreement(timeout: 30)
        let original = try await net.request("jenv", "GET", "/v1/records/al1.r01.a10").1["fields"]?["explanation"]
        var seqs: [Int64] = []
        for change: JSONValue in [["status": "delayed"], ["explanation": "Door een gestolen sleutel"], ["status": "completed"]] {
            let (status, answer) = try await net.request("politie", "PATCH", "/v1/records/al1.r01.a10", change)
            #expect(status == 200, "\(answer)")
            seqs.append(answer["commit"]?["seq"]?.intValue ?? -1)
        }
        _ = try await net.waitForAgreement(timeout: 30)

        let revoked = try cli(net, "jenv", ["partners", "revoke", "politie", "--after", "\(seqs[0])"])
        #expect(revoked.status == 0 && revoked.output.contains("undone here") && revoked.output.contains("2 commits"), "\(revoked.output)")
        for node in ["jenv", "comensha"] {
            let undone = try await eventually(15) {
                let fields = try await net.request(node, "GET", "/v1/records/al1.r01.a10").1["fields"]
                return fields?["status"] == "delayed" && fields?["explanation"] == original
            }
            #expect(undone, "\(node): politie's commits after \(seqs[0]) are undone, the one before stays")
            let withheld = try await net.request(node, "GET", "/v1/quarantine").1["withheld"]?.arrayValue ?? []
            #expect(withheld.compactMap { $0["seq"]?.intValue }.sorted() == Array(seqs[1...]) && withheld.allSatisfy { $0["reason"] == "retired" },
                    "\(node) lists what was undone: \(withheld)")
        }
        let listed = try cli(net, "comensha", ["quarantine"])
        #expect(listed.output.contains("withheld") && listed.output.contains("Door een gestolen sleutel"), "\(listed.output)")
        _ = try await net.waitForAgreement(["jenv", "comensha"], timeout: 30)
    }
}
