import Crypto
import Foundation
import ProgSyncCore
import ProgSyncHTTPClient
import Testing

/// Joining by invite (#12) on real daemons: `progsync partners invite` at the coordinator,
/// `progsyncd init --invite` on the new node over mutual TLS, and every way an invite is refused
/// (reused, expired, altered, another org) with nothing changed; the offline join through a
/// request and a bundle; a stranger's certificate reaches only the join route.
@Suite(.serialized) struct JoinTests {
    static let progsync = PeerNetwork.locate("progsync")

    func cli(_ net: PeerNetwork, _ node: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try PeerNetwork.run(Self.progsync, arguments + ["--socket", net.nodes[node]!.socket])
    }

    func invite(_ net: PeerNetwork, org: String, name: String, expires: String = "1d") throws -> String {
        let file = net.root + "/\(name).invite"
        let made = try cli(net, "jenv", ["partners", "invite", "--org", org, "--name", name, "--expires", expires,
                                         "--address", "https://127.0.0.1:\(net.nodes["jenv"]!.port)", "-o", file])
        #expect(made.status == 0 && made.output.contains("It admits one node"), "\(made.output)")
        return file
    }

    func partnerCount(_ net: PeerNetwork) async throws -> Int {
        try await net.request("jenv", "GET", "/v1/partners").1["orgs"]?.arrayValue?.reduce(0) { $0 + ($1["nodes"]?.arrayValue?.count ?? 0) } ?? -1
    }

    @Test func aNodeJoinsByInviteAndEveryWrongInviteIsRefusedWithNothingChanged() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        try net.start("jenv", sample: true)
        try net.start("politie")
        _ = try await net.waitForAgreement(timeout: 30)

        // Joined: admitted at once, then the new node pulls the whole replica, partnership included.
        let file = try invite(net, org: "comensha", name: "comensha-1")
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o600, "the invite holds a secret: mode \(String(mode ?? 0, radix: 8))")
        let joined = try net.join("comensha-1", invite: file)
        #expect(joined.status == 0 && joined.output.contains("admitted:"), "\(joined.output)")
        try net.start("comensha-1")
        _ = try await net.waitForAgreement(timeout: 30)
        let me = try await net.request("comensha-1", "GET", "/v1/partners/comensha-1").1
        #expect(me["state"] == "active" && me["org"] == "comensha" && me["admittedBy"] == "record", "\(me)")
        #expect(try await net.request("politie", "GET", "/v1/partners/comensha-1").1["state"] == "active")
        let records = try await net.request("comensha-1", "GET", "/v1/status").1["records"]?["total"]?.intValue ?? 0
        #expect(records > 100, "the joined node holds the programme: \(records) records")
        let log = try cli(net, "jenv", ["partners", "log"])
        #expect(log.output.contains("invite:"), "the admission names the invite as its author: \(log.output)")
        // Its own work reaches the others: it writes as comensha.
        let (created, createdBody) = try await net.request("comensha-1", "PUT", "/v1/records/cm.1", [
            "kind": "activity", "result": "al1.r01", "number": 960, "title": "Opvang", "owner": "comensha",
        ])
        #expect(created == 201, "\(createdBody)")
        #expect(try await eventually(15) { try await net.request("politie", "GET", "/v1/records/cm.1").0 == 200 })
        let count = try await partnerCount(net)

        // Reused: refused by the coordinator (which has another invite open, so it hears the new
        // node out); the new folder is left as it was (absent).
        let omInvite = try invite(net, org: "om", name: "om-1")
        let again = try net.join("comensha-2", invite: file)
        #expect(again.status != 0 && again.output.contains("used already"), "\(again.output)")
        #expect(!FileManager.default.fileExists(atPath: net.root + "/comensha-2"), "a refused join leaves no folder behind")

        // Altered: any changed byte breaks the coordinator's signature, checked before a key is made.
        let altered = net.root + "/altered.invite"
        let text = try String(contentsOfFile: omInvite, encoding: .utf8)
        try text.replacingOccurrences(of: "\"om\"", with: "\"politie\"").write(toFile: altered, atomically: true, encoding: .utf8)
        let forged = try net.join("om-1", invite: altered)
        #expect(forged.status != 0 && forged.output.contains("altered"), "\(forged.output)")

        // Meant for another organisation: refused by the coordinator.
        let om2Invite = try invite(net, org: "om", name: "om-2")
        let other = try net.join("om-as-politie", invite: om2Invite, extra: ["--org", "politie"])
        #expect(other.status != 0 && other.output.contains("for organisation om, not politie"), "\(other.output)")

        // Expired.
        let short = try invite(net, org: "om", name: "om-3", expires: "1s")
        try await Task.sleep(for: .milliseconds(1500))
        let late = try net.join("om-3", invite: short)
        #expect(late.status != 0 && late.output.contains("expired"), "\(late.output)")

        #expect(try await partnerCount(net) == count, "no refused invite admitted anyone")
        // Still open: om-1's and om-2's invites (refused, not used). Once nothing is open, the
        // listener refuses unknown certificates at the handshake again, and the joiner says why.
        for (name, file) in [("om-1", omInvite), ("om-2", om2Invite)] {
            let omJoined = try net.join(name, invite: file)
            #expect(omJoined.status == 0, "\(omJoined.output)")
        }
        let closed = try net.join("comensha-3", invite: file)
        #expect(closed.status != 0 && closed.output.contains("has no open invite"), "\(closed.output)")
        let invites = try cli(net, "jenv", ["partners", "invites", "--json"]).output
        let states = try JSONParser.parse(Array(invites.utf8))["invites"]?.arrayValue?.compactMap { $0["state"]?.stringValue } ?? []
        #expect(states.filter { $0 == "used" }.count == 3 && states.contains("expired"), "\(invites)")

        // While invites are open a stranger completes the TLS handshake, but reaches nothing but the join route.
        _ = try invite(net, org: "om", name: "om-4")
        let stranger = net.root + "/stranger"
        let strangerInit = try PeerNetwork.run(PeerNetwork.progsyncd, ["init", "--data-dir", stranger, "--org", "om"])
        #expect(strangerInit.status == 0)
        let client = try HTTPClient(configuration: .init(tls: .init(
            clientCertificatePath: stranger + "/tls-cert.pem", clientKeyPath: stranger + "/tls-key.pem",
            pinnedPublicKey: net.nodes["jenv"]!.pin, verifyPeer: false, verifyHost: false)))
        defer { client.shutdown() }
        var hello = HTTPClientRequest(url: "https://127.0.0.1:\(net.nodes["jenv"]!.port)/v1/peer/hello")
        hello.addHeader("Progsync-Protocol", "2")
        let answer = try await client.send(hello)
        #expect(answer.status == 403 && String(decoding: answer.body, as: UTF8.self).contains("joins with an invite"),
                "\(answer.status) \(String(decoding: answer.body, as: UTF8.self))")

        // An invite admits a new node only: a join that would also retire one (a rotation's
        // `replaces`) is refused, and the invite stays open.
        let identity = try JSONParser.parse([UInt8](FileManager.default.contents(atPath: stranger + "/identity.json")!))
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: Base64.decode(identity["privateKey"]!.stringValue!)!)
        let pin = strangerInit.output.split(separator: "\n").first { $0.hasPrefix("certificate:") }
            .map { String($0.dropFirst("certificate:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
        let politieInvite = try invite(net, org: "politie", name: "politie-2")
        let inviteJSON = try JSONParser.parse(Array(try String(contentsOfFile: politieInvite, encoding: .utf8).utf8))
        let request: JSONValue = [
            "progsyncJoinRequest": 1, "node": identity["id"]!, "org": "politie", "name": "thief", "publicKey": identity["publicKey"]!,
            "certificatePin": .string(pin), "replaces": .string(net.nodes["politie"]!.id),
        ]
        let proof = try key.signature(for: JSONValue.object(["invite": inviteJSON["id"]!, "request": request]).canonicalBytes)
        var join = HTTPClientRequest(method: "POST", url: "https://127.0.0.1:\(net.nodes["jenv"]!.port)/v1/peer/join",
                                     body: JSONValue.object(["invite": inviteJSON, "request": request, "proof": .string(Base64.encode(Array(proof)))]).canonicalBytes)
        join.addHeader("Progsync-Protocol", "2")
        join.addHeader("Content-Type", "application/json")
        let retiring = try await client.send(join)
        #expect(retiring.status == 403 && String(decoding: retiring.body, as: UTF8.self).contains("admits a new node only"),
                "\(retiring.status) \(String(decoding: retiring.body, as: UTF8.self))")
        #expect(try await net.request("jenv", "GET", "/v1/partners/politie").1["state"] == "active")
        #expect(try await partnerCount(net) == count + 2, "om-1 and om-2 joined; the thief did not")
    }

    @Test func anOfflineNodeJoinsThroughARequestAndABundle() async throws {
        let net = try PeerNetwork([("jenv", "jenv")])
        defer { net.tearDown() }
        try net.start("jenv", sample: true)
        let file = try invite(net, org: "politie", name: "laptop")
        let request = net.root + "/laptop.join.json"
        let set = try net.join("laptop", invite: file, extra: ["--request", request])
        #expect(set.status == 0 && set.output.contains("partners add"), "\(set.output)")
        // No route to the coordinator: its address taken out of the laptop's trust root.
        let registry = net.nodes["laptop"]!.folder + "/registry.json"
        let trustRoot = try String(contentsOfFile: registry, encoding: .utf8)
        #expect(trustRoot.contains("https://127.0.0.1:\(net.nodes["jenv"]!.port)"), "the trust root names the coordinator's address")
        try trustRoot.replacingOccurrences(of: "https://127.0.0.1:\(net.nodes["jenv"]!.port)", with: "https://127.0.0.1:9")
            .write(toFile: registry, atomically: true, encoding: .utf8)
        try net.start("laptop")
        #expect(try await net.request("laptop", "GET", "/v1/status").1["records"]?["total"] == 0, "a joined node never loads the sample")

        let added = try cli(net, "jenv", ["partners", "add", request])
        #expect(added.status == 0 && added.output.contains("admitted"), "\(added.output)")
        let bundle = net.root + "/jenv.bundle"
        #expect(try cli(net, "jenv", ["bundle", "export", "--all", "-o", bundle]).status == 0)
        let imported = try cli(net, "laptop", ["bundle", "import", bundle])
        #expect(imported.status == 0, "\(imported.output)")
        let me = try await net.request("laptop", "GET", "/v1/partners/laptop").1
        #expect(me["state"] == "active", "\(me)")
        #expect(try await net.digest("laptop") == net.digest("jenv"))
    }
}
