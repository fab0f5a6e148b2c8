import Foundation
import ProgSyncCore
import ProgSyncHTTPClient

/// `progsyncd init --invite FILE`: a new node's side of joining. It checks that the invite is
/// intact (signed by the node it names), makes the node's identity and TLS key, and presents
/// the invite to the issuing coordinator over mutual TLS, pinning the coordinator's certificate
/// from the invite. Only when the coordinator has admitted it does the folder get its trust root
/// (the partnership's, from the invite); a refusal removes what was made, so the folder is as
/// before and the command can be run again with a new invite.
public enum NodeJoin {
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public struct Outcome: Sendable {
        public let node: NodeFiles.StoredIdentity
        public let pin: String
        public let coordinator: String
        public let commit: String?
        public let org: String
    }

    /// The file that marks a data folder as joined: the node gets the programme from its
    /// partners, never the sample data.
    public static func markerPath(_ dataDirectory: String) -> String { dataDirectory + "/joined.json" }

    static func readInvite(_ path: String) throws -> Invite {
        guard let data = FileManager.default.contents(atPath: path) else { throw Refusal("cannot read the invite \(path)") }
        let json: JSONValue
        do { json = try JSONParser.parse([UInt8](data), maxDepth: 16) } catch {
            throw Refusal("\(path) is not an invite (not JSON)")
        }
        do { return try Invite(json: json) } catch { throw Refusal("\(path): \(error.message)") }
    }

    /// Joins online (`offlineRequest` nil) or writes a join request for `progsync partners add`.
    public static func join(dataDirectory: String, invitePath: String, org: String?, name: String?, address: String?,
                            offlineRequest: String?) async throws -> Outcome {
        let invite = try readInvite(invitePath)
        let org = org ?? invite.org
        guard invite.issuerPin != nil || invite.issuerAddress.hasPrefix("http://") else {
            throw Refusal("the invite names no certificate pin for the coordinator; ask for a new invite")
        }
        let fm = FileManager.default
        let createdFolder = !fm.fileExists(atPath: dataDirectory)
        try fm.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let paths = (identity: dataDirectory + "/identity.json", certificate: dataDirectory + "/tls-cert.pem", key: dataDirectory + "/tls-key.pem",
                     registry: dataDirectory + "/registry.json")
        if fm.fileExists(atPath: paths.registry) || fm.fileExists(atPath: paths.identity) {
            throw Refusal("\(dataDirectory) already holds a node; a new node joins with an empty data folder")
        }
        func undo() {
            for path in [paths.identity, paths.certificate, paths.key] { try? fm.removeItem(atPath: path) }
            if createdFolder { try? fm.removeItem(atPath: dataDirectory) }
        }
        do {
            let node = try NodeFiles.createIdentity(at: paths.identity, org: org, name: name ?? invite.name)
            let tls = try NodeTLSIdentity.create(commonName: node.name ?? node.identity.id.rawValue)
            try tls.write(certificatePath: paths.certificate, keyPath: paths.key)
            let request = NodeFiles.joinRequest(node, pin: tls.pin, address: address)
            var commit: String?
            if let offlineRequest {
                try (request.prettyString() + "\n").write(toFile: offlineRequest, atomically: true, encoding: .utf8)
            } else {
                commit = try await present(invite, request: request, node: node, certificate: paths.certificate, key: paths.key)
            }
            try writeTrustRoot(invite, to: paths.registry)
            try NodeFiles.writePrivate(JSONValue.object([
                "invite": .string(invite.id), "coordinator": .string(invite.issuer.rawValue),
                "admission": commit.map { .string($0) } ?? "pending: a coordinator runs progsync partners add",
                "joined": .string(Stamp.iso8601(milliseconds: UInt64(Date().timeIntervalSince1970 * 1000))),
            ]).prettyString() + "\n", to: markerPath(dataDirectory))
            return Outcome(node: node, pin: tls.pin, coordinator: invite.issuer.rawValue, commit: commit, org: org)
        } catch {
            undo()
            throw error
        }
    }

    /// POST /v1/peer/join at the issuer; the admission commit's ref, or the coordinator's refusal.
    static func present(_ invite: Invite, request: JSONValue, node: NodeFiles.StoredIdentity, certificate: String, key: String) async throws -> String {
        let tls = invite.issuerPin.map { peerClientTLS(certificatePath: certificate, keyPath: key, peerPin: $0) }
        let client = try HTTPClient(configuration: .init(connectTimeout: .seconds(10), requestTimeout: .seconds(30), tls: tls))
        defer { client.shutdown() }
        let body = try Invite.joinBody(invite: invite.json, request: request, identity: node.identity)
        var call = HTTPClientRequest(method: "POST", url: invite.issuerAddress.trimmingSuffix("/") + PeerJoin.path, body: body.canonicalBytes)
        call.addHeader("Content-Type", "application/json")
        call.addHeader(PeerProtocol.versionHeaderName, "\(PeerProtocol.local.version)")
        call.addHeader(PeerProtocol.minimumHeaderName, "\(PeerProtocol.local.minimum)")
        let response: HTTPClientResponse
        do {
            response = try await client.send(call)
        } catch let error as HTTPClientError where error.message.contains("certificate unknown") {
            // Its listener lets unknown certificates through only while it has an open invite.
            throw Refusal("the coordinator at \(invite.issuerAddress) has no open invite (this one was used, expired, or made elsewhere); ask for a new invite. Nothing was changed")
        } catch {
            throw Refusal("cannot reach the coordinator at \(invite.issuerAddress): \(error). Nothing was changed")
        }
        let answer = try? JSONParser.parse(response.body, maxDepth: 16)
        guard response.status == 201, let commit = answer?["commit"]?.stringValue else {
            let message = answer?["message"]?.stringValue ?? "HTTP \(response.status)"
            throw Refusal("the coordinator refused the invite: \(message). Nothing was changed")
        }
        return commit
    }

    /// The partnership's trust root as the coordinator holds it, so this node judges every commit
    /// as the others do; the issuer gets the address and pin from the invite, so the new node
    /// dials it before the membership records arrive.
    static func writeTrustRoot(_ invite: Invite, to path: String) throws {
        var registry: PartnerRegistry
        do { registry = try PartnerRegistry(json: invite.trustRoot) } catch {
            throw Refusal("the invite's trust root is unreadable: \(error)")
        }
        var issuer = registry.node(invite.issuer)
            ?? PartnerRegistry.Node(org: invite.issuerOrg, publicKey: Membership.publicKey(.string(invite.issuerKey))!)
        issuer.address = invite.issuerAddress
        issuer.certificatePin = invite.issuerPin ?? issuer.certificatePin
        registry.add(issuer)
        try NodeFiles.writePrivate(registry.json.prettyString() + "\n", to: path)
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
