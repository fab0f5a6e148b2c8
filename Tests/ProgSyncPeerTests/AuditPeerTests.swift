import Foundation
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncHTTPClient
import Testing

/// What partners and strangers try on the peer port lands in the audit log of a real daemon:
/// TLS handshakes refused (an unknown certificate, none at all) and pushed commits held or refused.
@Suite(.serialized) struct AuditPeerTests {
    @Test func refusedConnectionsAndRefusedOrHeldCommitsAreAudited() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        net.links = ["jenv": [], "politie": []]
        try net.start("jenv")
        let jenv = try #require(net.nodes["jenv"]), politie = try #require(net.nodes["politie"])
        let base = "https://127.0.0.1:\(jenv.port)"

        func send(_ tls: HTTPClientConfiguration.TLS, _ request: HTTPClientRequest) async throws -> HTTPClientResponse {
            let client = try HTTPClient(configuration: .init(connectTimeout: .seconds(5), requestTimeout: .seconds(10), tls: tls))
            defer { client.shutdown() }
            return try await client.send(request)
        }

        // A certificate the registry does not list, then no certificate at all.
        let stranger = try NodeTLSIdentity.create(commonName: "stranger")
        let strangerCert = net.root + "/stranger.crt", strangerKey = net.root + "/stranger.key"
        try stranger.write(certificatePath: strangerCert, keyPath: strangerKey)
        await #expect(throws: HTTPClientError.self) {
            _ = try await send(peerClientTLS(certificatePath: strangerCert, keyPath: strangerKey, peerPin: jenv.pin),
                               HTTPClientRequest(url: base + "/v1/peer/hello").asPartner())
        }
        await #expect(throws: HTTPClientError.self) {
            _ = try await send(HTTPClientTLSWithoutCertificate(pin: jenv.pin), HTTPClientRequest(url: base + "/v1/peer/hello").asPartner())
        }

        // politie, a partner, pushes a commit of an origin nobody registered (held) and one of
        // its own with a broken signature (refused).
        let unknown = NodeIdentity()
        func commit(_ origin: NodeIdentity) throws -> SignedCommit {
            try SignedCommit.sign(Commit(origin: origin.id, seq: 1, stamp: Stamp(milliseconds: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0),
                                         author: "pim", prev: [], ownerRefs: [:],
                                         changes: [Change(record: "pol.9", field: "explanation", value: "vertrouwelijk-8812")]), with: origin)
        }
        let held = try commit(unknown)
        let forged = try commit(NodeIdentity(privateKey: politie.privateKey))
        var signature = forged.signature
        signature[0] ^= 0xFF
        let body = JSONValue.object(["commits": .array([CommitWire.json(body: held.canonicalBytes, signature: held.signature),
                                                         CommitWire.json(body: forged.canonicalBytes, signature: signature)])])
        let pushed = try await send(
            peerClientTLS(certificatePath: politie.folder + "/tls-cert.pem", keyPath: politie.folder + "/tls-key.pem", peerPin: jenv.pin),
            HTTPClientRequest(method: "POST", url: base + "/v1/peer/commits", headers: [HTTPHeader("Content-Type", "application/json")],
                              body: body.canonicalBytes).asPartner())
        let answer = try JSONParser.parse(pushed.body)
        #expect(pushed.status == 200 && answer["held"] == 1 && answer["rejected"] == 1, "\(answer)")

        var events: [JSONValue] = []
        let found = try await eventually(10) {
            events = try await net.request("jenv", "GET", "/v1/audit").1["events"]?.arrayValue ?? []
            return events.filter { $0["action"] == "tls-connection" }.count >= 2 && events.contains { $0["action"] == "remote-commit" }
        }
        #expect(found, "\(events)")
        let tls = events.filter { $0["action"] == "tls-connection" }
        #expect(tls.allSatisfy { $0["result"] == "refused" && $0["object"] == "127.0.0.1" }, "\(tls)")
        #expect(tls.contains { $0["reason"] == "certificate-not-in-registry" && $0["actor"]?.stringValue == stranger.pin }, "\(tls)")
        #expect(tls.contains { $0["reason"] == "no-client-certificate" }, "\(tls)")
        let commits = events.filter { $0["action"] == "remote-commit" }
        #expect(commits.contains {
            $0["result"] == "held" && $0["reason"] == "unknown-node" && $0["object"]?.stringValue == "\(held.commit.ref)"
                && $0["origin"]?.stringValue == "push:\(politie.id)"
        }, "\(commits)")
        #expect(commits.contains { $0["result"] == "refused" && $0["reason"] == "bad-signature" && $0["actor"]?.stringValue == politie.id }, "\(commits)")
        let log = try String(contentsOfFile: jenv.folder + "/audit.jsonl", encoding: .utf8)
        #expect(!log.contains("vertrouwelijk-8812"), "no record contents in the audit log")
    }
}

/// TLS to a pinned server without presenting a client certificate.
func HTTPClientTLSWithoutCertificate(pin: String) -> HTTPClientConfiguration.TLS {
    HTTPClientConfiguration.TLS(pinnedPublicKey: pin, verifyPeer: false, verifyHost: false)
}
