import Crypto
import Foundation
import HTTPTypes
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// An invitation to join the partnership (#12): made at a coordinator node by `progsync partners
/// invite`, carried to the new node as a file, presented once by `progsyncd init --invite` over
/// mutual TLS. It holds what the new node needs to trust and reach the coordinator (the
/// partnership's trust root, the issuing node's key, pin and address) and a single-use secret.
/// The issuing node signs it, so a changed org, expiry or address is refused; it keeps only a
/// hash of the secret (`InviteBook`), so its data folder does not hold usable invites.
struct Invite: Sendable {
    static let format = 1

    var id: String
    var org: String
    var name: String?
    var orgName: String?
    var expiresAt: UInt64
    var issuer: NodeID
    var issuerOrg: String
    var issuerKey: String
    var issuerAddress: String
    var issuerPin: String?
    var trustRoot: JSONValue
    var secret: [UInt8]
    var signature: [UInt8] = []

    /// Everything but the signature, in canonical form: what the issuer signs.
    var signedJSON: JSONValue {
        var o: [String: JSONValue] = [
            "progsyncInvite": .int(Int64(Self.format)), "id": .string(id), "org": .string(org),
            "expiresAt": .int(Int64(expiresAt)), "expires": .string(Stamp.iso8601(milliseconds: expiresAt)),
            "issuer": .object([
                "node": .string(issuer.rawValue), "org": .string(issuerOrg), "publicKey": .string(issuerKey), "address": .string(issuerAddress),
                "certificatePin": issuerPin.map { .string($0) } ?? .null,
            ]),
            "trustRoot": trustRoot, "secret": .string(Base64.encode(secret)),
        ]
        if let name { o["name"] = .string(name) }
        if let orgName { o["orgName"] = .string(orgName) }
        return .object(o)
    }

    var json: JSONValue {
        guard case .object(var o) = signedJSON else { return signedJSON }
        o["signature"] = .string(Base64.encode(signature))
        return .object(o)
    }

    mutating func sign(with identity: NodeIdentity) throws {
        signature = Array(try identity.privateKey.signature(for: signedJSON.canonicalBytes))
    }

    /// Reads an invite and checks that the node it names signed exactly this content.
    init(json: JSONValue) throws(APIError) {
        guard json["progsyncInvite"]?.intValue == Int64(Self.format) else {
            throw APIError(.badRequest, "invite-malformed", "not a progsync invite (format \(Self.format))")
        }
        guard let id = json["id"]?.stringValue, id.utf8.count == 32, id.allSatisfy(\.isHexDigit),
              let org = json["org"]?.stringValue, ProgrammeSchema.isValidOrgCode(org),
              let expiresAt = json["expiresAt"]?.intValue, expiresAt > 0,
              let issuer = json["issuer"]?["node"]?.stringValue.flatMap(NodeID.init),
              let issuerOrg = json["issuer"]?["org"]?.stringValue, ProgrammeSchema.isValidOrgCode(issuerOrg),
              let issuerKey = json["issuer"]?["publicKey"]?.stringValue, let key = Membership.publicKey(.string(issuerKey)),
              NodeID(publicKey: key) == issuer,
              let address = json["issuer"]?["address"]?.stringValue, address.hasPrefix("https://") || address.hasPrefix("http://"),
              let secret = json["secret"]?.stringValue.flatMap(Base64.decode), secret.count == 32,
              let signature = json["signature"]?.stringValue.flatMap(Base64.decode),
              case .object = json["trustRoot"] ?? .null
        else { throw APIError(.badRequest, "invite-malformed", "the invite is damaged or incomplete; ask the coordinator for a new one") }
        self.id = id
        self.org = org
        self.name = json["name"]?.stringValue
        self.orgName = json["orgName"]?.stringValue
        self.expiresAt = UInt64(expiresAt)
        self.issuer = issuer
        self.issuerOrg = issuerOrg
        self.issuerKey = issuerKey
        self.issuerAddress = address
        self.issuerPin = json["issuer"]?["certificatePin"]?.stringValue
        self.trustRoot = json["trustRoot"]!
        self.secret = secret
        self.signature = signature
        // The whole file as it came, minus the signature, must be what was signed: an added
        // or changed key counts as an alteration.
        guard case .object(var fields) = json else { throw APIError(.badRequest, "invite-malformed", "not an object") }
        fields["signature"] = nil
        guard key.isValidSignature(signature, for: JSONValue.object(fields).canonicalBytes),
              JSONValue.object(fields).canonicalBytes == signedJSON.canonicalBytes
        else {
            throw APIError(.forbidden, "invite-altered", "the invite was altered after the coordinator signed it; ask the coordinator for a new one")
        }
    }

    init(id: String, org: String, name: String?, orgName: String?, expiresAt: UInt64, issuer: NodeIdentity, issuerOrg: String,
         issuerAddress: String, issuerPin: String?, trustRoot: JSONValue, secret: [UInt8]) {
        self.id = id
        self.org = org
        self.name = name
        self.orgName = orgName
        self.expiresAt = expiresAt
        self.issuer = issuer.id
        self.issuerOrg = issuerOrg
        self.issuerKey = issuer.publicKeyBase64
        self.issuerAddress = issuerAddress
        self.issuerPin = issuerPin
        self.trustRoot = trustRoot
        self.secret = secret
    }

    /// What the joining node sends: the invite, its join request, and its node key's signature
    /// over both (it holds the key it asks to admit).
    static func joinBody(invite: JSONValue, request: JSONValue, identity: NodeIdentity) throws -> JSONValue {
        let proof = try identity.privateKey.signature(for: proofBytes(inviteID: invite["id"]?.stringValue ?? "", request: request))
        return .object(["invite": invite, "request": request, "proof": .string(Base64.encode(Array(proof)))])
    }

    static func proofBytes(inviteID: String, request: JSONValue) -> [UInt8] {
        JSONValue.object(["invite": .string(inviteID), "request": request]).canonicalBytes
    }
}

/// The invites a coordinator node has issued, in `<data>/invites.json` (0600): per invite its
/// org, expiry, the SHA-256 of its secret and, once used, by which node and when. Local to the
/// node, never replicated. Redeeming marks the invite used on disk before the admission is
/// committed, so a crash in between leaves it used (ask for a new one), never usable twice.
final class InviteBook: Sendable {
    struct Entry: Sendable {
        var id: String
        var org: String
        var name: String?
        var createdAt: UInt64
        var expiresAt: UInt64
        var secretHash: [UInt8]
        var usedAt: UInt64?
        var usedBy: String?

        var json: JSONValue {
            .object([
                "id": .string(id), "org": .string(org), "name": name.map { .string($0) } ?? .null,
                "created": .string(Stamp.iso8601(milliseconds: createdAt)), "expires": .string(Stamp.iso8601(milliseconds: expiresAt)),
                "secretHash": .string(Hex.encode(secretHash)),
                "used": usedAt.map { .string(Stamp.iso8601(milliseconds: $0)) } ?? .null, "usedBy": usedBy.map { .string($0) } ?? .null,
            ])
        }

        init(id: String, org: String, name: String?, createdAt: UInt64, expiresAt: UInt64, secretHash: [UInt8]) {
            self.id = id
            self.org = org
            self.name = name
            self.createdAt = createdAt
            self.expiresAt = expiresAt
            self.secretHash = secretHash
        }

        init?(json: JSONValue) {
            guard let id = json["id"]?.stringValue, let org = json["org"]?.stringValue,
                  let created = json["createdAt"]?.intValue, let expires = json["expiresAt"]?.intValue,
                  let hash = json["secretHash"]?.stringValue.flatMap(Hex.decode), hash.count == 32
            else { return nil }
            self.init(id: id, org: org, name: json["name"]?.stringValue, createdAt: UInt64(created), expiresAt: UInt64(expires), secretHash: hash)
            usedAt = json["usedAt"]?.intValue.map(UInt64.init)
            usedBy = json["usedBy"]?.stringValue
        }

        var stored: JSONValue {
            .object([
                "id": .string(id), "org": .string(org), "name": name.map { .string($0) } ?? .null,
                "createdAt": .int(Int64(createdAt)), "expiresAt": .int(Int64(expiresAt)), "secretHash": .string(Hex.encode(secretHash)),
                "usedAt": usedAt.map { .int(Int64($0)) } ?? .null, "usedBy": usedBy.map { .string($0) } ?? .null,
            ])
        }
    }

    let path: String
    private let entries: Mutex<[Entry]>

    init(path: String) throws {
        self.path = path
        var loaded: [Entry] = []
        if let data = FileManager.default.contents(atPath: path) {
            guard let json = try? JSONParser.parse([UInt8](data)), let list = json["invites"]?.arrayValue else {
                throw ConfigurationError("\(path) is not a progsync invite list; move it away to start a new one")
            }
            loaded = list.compactMap(Entry.init(json:))
        }
        entries = Mutex(loaded)
    }

    var all: [Entry] { entries.withLock { $0 } }

    /// Whether an unused, unexpired invite exists: only then does the peer listener let an
    /// unknown certificate through the handshake, and only to the join route.
    func hasOpen(now: UInt64 = Replica.wallClockMilliseconds()) -> Bool {
        entries.withLock { $0.contains { $0.usedAt == nil && $0.expiresAt > now } }
    }

    func add(_ entry: Entry) throws {
        try entries.withLock { list in
            try save(list + [entry])
            list.append(entry)
        }
    }

    /// Checks a presented invite against the book and marks it used by `node`, or says exactly
    /// why not: unknown, already used, expired, another org, or a wrong secret.
    func redeem(_ invite: Invite, org: String, node: NodeID, now: UInt64 = Replica.wallClockMilliseconds()) throws(APIError) -> Entry {
        let hash = Array(SHA256.hash(data: invite.secret))
        let result: Result<Entry, APIError> = entries.withLock { list in
            guard let i = list.firstIndex(where: { $0.id == invite.id }) else {
                return .failure(APIError(.notFound, "invite-unknown", "this node issued no invite \(invite.id); it may have been made for another node"))
            }
            let entry = list[i]
            guard constantTimeEqual(entry.secretHash, hash) else {
                return .failure(APIError(.forbidden, "invite-altered", "the invite's secret does not match the one issued; ask the coordinator for a new invite"))
            }
            if let used = entry.usedAt {
                return .failure(APIError(.conflict, "invite-used",
                                            "this invite was used already, by node \(entry.usedBy ?? "?") at \(Stamp.iso8601(milliseconds: used)); an invite admits one node"))
            }
            guard entry.expiresAt > now else {
                return .failure(APIError(.gone, "invite-expired", "this invite expired at \(Stamp.iso8601(milliseconds: entry.expiresAt)); ask the coordinator for a new one"))
            }
            guard entry.org == org, invite.org == org else {
                return .failure(APIError(.forbidden, "invite-other-org", "this invite is for organisation \(entry.org), not \(org)"))
            }
            var updated = list
            updated[i].usedAt = now
            updated[i].usedBy = node.rawValue
            do {
                try save(updated)
            } catch {
                return .failure(APIError(.internalServerError, "internal", "cannot record the invite as used: \(error)"))
            }
            list = updated
            return .success(updated[i])
        }
        return try result.get()
    }

    /// Makes a redeemed invite usable again: its admission could not be committed.
    func release(_ id: String) {
        entries.withLock { list in
            guard let i = list.firstIndex(where: { $0.id == id }) else { return }
            var updated = list
            updated[i].usedAt = nil
            updated[i].usedBy = nil
            if (try? save(updated)) != nil { list = updated }
        }
    }

    private func save(_ list: [Entry]) throws {
        let text = JSONValue.object(["invites": .array(list.map(\.stored))]).prettyString() + "\n"
        let temp = path + ".tmp"
        unlink(temp)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ConfigurationError("cannot write \(temp): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let ok = write(fd, bytes, bytes.count) == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(temp, path) == 0 else { throw ConfigurationError("cannot write \(path): \(String(cString: strerror(errno)))") }
    }
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
}
