import Crypto
import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncHTTPClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real nodes of three organisations on loopback, over mutual TLS.
@Suite(.serialized) struct ReplicationTests {
    static let members: [(name: String, org: String)] = [("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")]

    typealias Ack = AckedWrite

    /// Creates `count` activities owned by `owner` through the coordinator.
    func createRecords(_ net: PeerNetwork, prefix: String, owner: String, count: Int) async throws -> [String] {
        var ids: [String] = []
        for i in 1...count {
            let id = "\(prefix).\(i)"
            let (status, body) = try await net.request("jenv", "PUT", "/v1/records/\(id)", [
                "kind": "activity", "result": "al1.r01", "number": .int(Int64(i)), "title": .string("Test \(id)"), "owner": .string(owner),
            ])
            #expect(status == 201, "\(body)")
            ids.append(id)
        }
        return ids
    }

    @Test func threeOrganisationsConvergeUnderConcurrentEdits() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        try net.start("jenv", sample: true)
        try net.start("politie")
        try net.start("comensha")
        _ = try await net.waitForAgreement()
        let politieRecords = try await createRecords(net, prefix: "pol", owner: "politie", count: 8)
        let comenshaRecords = try await createRecords(net, prefix: "com", owner: "comensha", count: 8)
        _ = try await net.waitForAgreement()

        // Concurrent edits: jenv (coordinator) and each owner write the same fields.
        let statuses = ProgrammeStatus.allCases.map(\.rawValue)
        let plan: [(node: String, records: [String])] = [
            ("jenv", politieRecords + comenshaRecords), ("politie", politieRecords), ("comensha", comenshaRecords),
        ]
        let acks = try await withThrowingTaskGroup(of: [Ack].self) { group in
            for (node, records) in plan {
                group.addTask {
                    var acks: [Ack] = []
                    var rng = SystemRandomNumberGenerator()
                    for i in 0..<40 {
                        let record = records.randomElement(using: &rng)!
                        let field = Bool.random(using: &rng) ? "status" : "explanation"
                        let value: JSONValue = field == "status" ? .string(statuses.randomElement(using: &rng)!) : .string("\(node) \(i)")
                        acks.append(try await net.write(node, record, field, value))
                    }
                    return acks
                }
            }
            var all: [Ack] = []
            for try await part in group { all += part }
            return all
        }
        _ = try await net.waitForAgreement(timeout: 30)

        // The same conflicts everywhere, and every competing value is an acknowledged write.
        var conflictSets: [String] = []
        for name in net.order { conflictSets.append(try await net.conflictsToCompare(name)) }
        #expect(Set(conflictSets).count == 1, "nodes list different conflicts")
        let conflicts = try await net.request("comensha", "GET", "/v1/conflicts").1["conflicts"]?.arrayValue ?? []
        let ackedValues = Set(acks.map { "\($0.record)|\($0.field)|\($0.value.canonicalString)|\($0.origin)" })
        for conflict in conflicts {
            for version in conflict["versions"]?.arrayValue ?? [] {
                let key = "\(conflict["record"]!.stringValue!)|\(conflict["field"]!.stringValue!)|\(version["value"]!.canonicalString)|\(version["origin"]!.stringValue!)"
                #expect(ackedValues.contains(key), "conflict version that nobody wrote: \(key)")
            }
        }
        #expect(!conflicts.isEmpty, "concurrent same-field edits should have produced conflicts")
        // Every acknowledged commit is on every node, and each field holds an acknowledged value.
        for record in Set(acks.map(\.record)) {
            let history = try await net.request("politie", "GET", "/v1/records/\(record)/history").1["history"]?.arrayValue ?? []
            let commits = Set(history.map { "\($0["origin"]!.stringValue!)/\($0["seq"]!.intValue!)" })
            for ack in acks where ack.record == record {
                #expect(commits.contains("\(ack.origin)/\(ack.seq)"), "acknowledged write \(ack) missing on politie")
            }
            let fields = try await net.request("politie", "GET", "/v1/records/\(record)").1["fields"]
            for field in ["status", "explanation"] {
                let written = acks.filter { $0.record == record && $0.field == field }
                guard !written.isEmpty, let value = fields?[field] else { continue }
                #expect(written.contains { $0.value == value }, "\(record).\(field) = \(value), which nobody wrote")
            }
        }

        // Different fields of one record, edited at the same time, never conflict.
        let shared = try await createRecords(net, prefix: "split", owner: "politie", count: 5)
        _ = try await net.waitForAgreement()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for id in shared { _ = try await net.request("jenv", "PATCH", "/v1/records/\(id)", ["explanation": "jenv note"]) } }
            group.addTask { for id in shared { _ = try await net.request("politie", "PATCH", "/v1/records/\(id)", ["status": "delayed"]) } }
            try await group.waitForAll()
        }
        _ = try await net.waitForAgreement()
        let after = try #require(try await net.request("jenv", "GET", "/v1/conflicts").1["conflicts"]?.arrayValue)
        #expect(!after.contains { shared.contains($0["record"]?.stringValue ?? "") }, "different-field edits produced a conflict")
        for id in shared {
            let fields = try await net.request("comensha", "GET", "/v1/records/\(id)").1["fields"]
            #expect(fields?["explanation"] == "jenv note" && fields?["status"] == "delayed")
        }
    }

    @Test func editsRelayAlongAChain() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        // jenv knows only politie; comensha knows only politie.
        net.links = ["jenv": ["politie"], "politie": ["jenv", "comensha"], "comensha": ["politie"]]
        try net.start("jenv", sample: true)
        try net.start("politie")
        try net.start("comensha")
        _ = try await net.waitForAgreement()
        let (status, _) = try await net.request("jenv", "PATCH", "/v1/records/al1.r01.a02", ["status": "completed"])
        #expect(status == 200)
        _ = try await net.waitForAgreement()
        let fields = try await net.request("comensha", "GET", "/v1/records/al1.r01.a02").1["fields"]
        #expect(fields?["status"] == "completed")
        let peers = try await net.request("comensha", "GET", "/v1/peers").1["peers"]?.arrayValue ?? []
        #expect(peers.map { $0["name"]?.stringValue } == ["politie"], "comensha should talk to politie only")
    }

    /// A relay that alters a commit of jenv's (keeping the signature) is caught by the receiver.
    @Test func tamperingRelayIsCaught() async throws {
        let net = try PeerNetwork(Self.members + [("relay", "om")])
        defer { net.tearDown() }
        net.links = ["comensha": ["relay"]]
        try net.start("comensha")
        let jenv = net.nodes["jenv"]!
        let identity = NodeIdentity(privateKey: jenv.privateKey)
        let genuine = try SignedCommit.sign(Commit(
            origin: identity.id, seq: 1, stamp: Stamp(milliseconds: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0),
            author: "anna", prev: [], changes: [Change(record: "t.1", field: "kind", value: "activity"),
                                                Change(record: "t.1", field: "owner", value: "jenv")]), with: identity)
        var altered = try SignedCommit.sign(Commit(
            origin: identity.id, seq: 2, stamp: Stamp(milliseconds: genuine.commit.stamp.milliseconds + 1, counter: 0),
            author: "anna", prev: genuine.hash, changes: [Change(record: "t.1", field: "title", value: "Echt")]), with: identity)
        var changed = altered.commit
        changed.changes[0].value = "Vervalst"
        altered = SignedCommit(commit: changed, signature: altered.signature)

        // The fake relay: the registry's "relay" node, with its real TLS files, serving the feed.
        let relay = net.nodes["relay"]!
        let tls = try NodeTLSIdentity.load(certificatePath: relay.folder + "/tls-cert.pem", keyPath: relay.folder + "/tls-key.pem")
        let router = Router()
        let feed = CommitWire.json([genuine, altered])
        let relayID = relay.id
        router.get("/v1/peer/hello") { _, _ in
            Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: JSONValue.object([
                "node": .string(relayID), "org": "om", "protocol": 2, "versionVector": .object([:]), "lastLSN": 2,
            ]).canonicalBytes)))
        }
        router.get("/v1/peer/commits") { request, _ in
            let since = Int(request.uri.queryParameters["since"].map(String.init) ?? "0") ?? 0
            let body: JSONValue = since >= 2
                ? ["commits": [], "cursor": 2, "more": false, "lastLSN": 2]
                : ["commits": feed, "cursor": 2, "more": false, "lastLSN": 2]
            if since >= 2 { try await Task.sleep(for: .milliseconds(200)) }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: body.canonicalBytes)))
        }
        router.post("/v1/peer/commits") { _, _ in
            Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: JSONValue.object(["versionVector": .object([:])]).canonicalBytes)))
        }
        let comenshaPin = net.nodes["comensha"]!.pin
        let app = Application(
            router: router,
            server: try .tls(.http1(), configuration: try peerServerTLSConfiguration(identity: tls, allowedPins: { [comenshaPin] }, logger: Logger(label: "relay"))),
            configuration: .init(address: .hostname("127.0.0.1", port: relay.port)))
        let serving = Task { try await app.runService(gracefulShutdownSignals: []) }
        defer { serving.cancel() }

        let deadline = Date().addingTimeInterval(15)
        var status: JSONValue = .null
        while Date() < deadline {
            status = try await net.request("comensha", "GET", "/v1/status").1
            if (status["rejected"]?.intValue ?? 0) > 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(status["rejected"]?.intValue == 1, "\(status)")
        let record = try await net.request("comensha", "GET", "/v1/records/t.1").1
        #expect(record["fields"]?["title"] == nil, "the altered title must not be applied")
        #expect(record["fields"]?["owner"] == "jenv", "the genuine commit before it applies")
        #expect(net.log("comensha").contains(#"msg="partner commit refused" channel=pull:"#))
        #expect(net.log("comensha").contains("bad-signature"))
    }

    @Test func peerListenerRefusesStrangersAndBadCommits() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        net.links = ["jenv": [], "politie": [], "comensha": []]
        try net.start("politie")
        let politie = net.nodes["politie"]!
        let url = "https://127.0.0.1:\(politie.port)/v1/peer/hello"
        func client(cert: String?, key: String?) throws -> HTTPClient {
            try HTTPClient(configuration: .init(requestTimeout: .seconds(10), tls: .init(
                clientCertificatePath: cert, clientKeyPath: key, pinnedPublicKey: politie.pin, verifyPeer: false, verifyHost: false)))
        }
        // No client certificate.
        let anonymous = try client(cert: nil, key: nil)
        await #expect(throws: HTTPClientError.self) { _ = try await anonymous.send(HTTPClientRequest(url: url)) }
        // A certificate the registry does not list.
        let stranger = try NodeTLSIdentity.create(commonName: "stranger")
        let folder = net.root + "/stranger"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try stranger.write(certificatePath: folder + "/cert.pem", keyPath: folder + "/key.pem")
        let strangerClient = try client(cert: folder + "/cert.pem", key: folder + "/key.pem")
        await #expect(throws: HTTPClientError.self) { _ = try await strangerClient.send(HTTPClientRequest(url: url)) }
        #expect(net.log("politie").contains("client certificate not in the partner registry"))
        // A listed node's certificate gets through.
        let jenv = net.nodes["jenv"]!
        let member = try client(cert: jenv.folder + "/tls-cert.pem", key: jenv.folder + "/tls-key.pem")
        let hello = try await member.send(HTTPClientRequest(url: url).asPartner())
        #expect(hello.status == 200)

        // Pushed commits: forged, unauthorised and replayed ones change nothing.
        let before = try await net.digest("politie")
        func push(_ commits: [SignedCommit]) async throws -> JSONValue {
            let response = try await member.send(HTTPClientRequest(
                method: "POST", url: "https://127.0.0.1:\(politie.port)/v1/peer/commits",
                body: JSONValue.object(["commits": CommitWire.json(commits)]).canonicalBytes).asPartner())
            #expect(response.status == 200)
            return try JSONParser.parse(response.body)
        }
        let comensha = NodeIdentity(privateKey: net.nodes["comensha"]!.privateKey)
        let now = Stamp(milliseconds: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0)
        // Forged: claims to be comensha, signed by another key.
        let forged = try SignedCommit.sign(
            Commit(origin: comensha.id, seq: 1, stamp: now, author: "eve", prev: [],
                   changes: [Change(record: "f.1", field: "owner", value: "comensha")]), with: NodeIdentity())
        #expect(try await push([forged])["rejected"]?.intValue == 1)
        #expect(try await net.digest("politie") == before)
        // Unauthorised: comensha gives itself a record created as politie's.
        let politieID = NodeIdentity(privateKey: politie.privateKey)
        let created = try SignedCommit.sign(
            Commit(origin: politieID.id, seq: 1, stamp: now, author: "p", prev: [],
                   changes: [Change(record: "p.1", field: "owner", value: "politie")]), with: politieID)
        _ = try await push([created])
        let afterCreate = try await net.digest("politie")
        let takeover = try SignedCommit.sign(
            Commit(origin: comensha.id, seq: 1, stamp: Stamp(rawValue: now.rawValue + 1), author: "eve", prev: [],
                   changes: [Change(record: "p.1", field: "owner", value: "comensha", supersedes: [created.ref])]), with: comensha)
        #expect(try await push([takeover])["rejected"]?.intValue == 1)
        #expect(try await net.digest("politie") == afterCreate)
        // Replayed: the same commit again is a no-op; another commit for a used seq is refused.
        let again = try await push([created])
        #expect(again["duplicates"]?.intValue == 1 && again["applied"]?.intValue == 0)
        let fork = try SignedCommit.sign(
            Commit(origin: politieID.id, seq: 1, stamp: now, author: "p", prev: [],
                   changes: [Change(record: "p.2", field: "owner", value: "politie")]), with: politieID)
        #expect(try await push([fork])["rejected"]?.intValue == 1)
        #expect(try await net.digest("politie") == afterCreate)
        #expect(net.log("politie").contains(#"msg="partner commit refused" channel=push:"#))
        for c in [anonymous, strangerClient, member] { c.shutdown() }
    }

    @Test func outagesHealWithoutLossOrDuplicates() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        try net.start("jenv", sample: true)
        try net.start("politie")
        try net.start("comensha")
        _ = try await net.waitForAgreement()
        // Heavy sync: a 3,000-record import on jenv; politie is killed in the middle of it.
        let records: [JSONValue] = (1...3000).map { i in
            ["id": .string("bulk.\(i)"), "kind": "activity", "result": "al1.r01", "number": .int(Int64(i % 900 + 1)),
             "title": .string("Bulk \(i)"), "status": "on-track", "owner": "politie"]
        }
        let (status, _) = try await net.request("jenv", "POST", "/v1/import", ["records": .array(records)])
        #expect(status == 200)
        try await Task.sleep(for: .milliseconds(150))
        net.stop("politie", signal: SIGKILL)
        // comensha is down for a while as well, while jenv keeps writing.
        net.stop("comensha")
        for i in 1...20 {
            _ = try await net.request("jenv", "PATCH", "/v1/records/bulk.\(i)", ["status": "delayed"])
        }
        try await Task.sleep(for: .seconds(1))
        try net.start("politie")
        try net.start("comensha")
        _ = try await net.waitForAgreement(timeout: 60)
        for name in net.order {
            let s = try await net.request(name, "GET", "/v1/status").1
            #expect(s["records"]?["activity"]?.intValue == Int64(122 + 3000), "\(name): \(s["records"] ?? .null)")
            #expect(s["held"]?.intValue == 0 && s["rejected"]?.intValue == 0, "\(name): \(s)")
            let record = try await net.request(name, "GET", "/v1/records/bulk.7").1
            #expect(record["fields"]?["status"] == "delayed")
        }
    }
}
