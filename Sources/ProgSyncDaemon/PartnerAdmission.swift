import Crypto
import HTTPTypes
import ProgSyncCore
import ProgSyncStore

/// A coordinator's membership writes, checked against the partnership in force: admitting a
/// node from its join request, and retiring one. `progsync partners add` (the local API) and a
/// join by invite (the peer listener) admit through this one place.
struct PartnerAdmission {
    let replica: Replica

    /// What a join request may hold (`progsyncd init --request` and `rotate-key` write one).
    static let requestKeys: Set<String> = ["org", "publicKey", "certificatePin", "address", "name", "orgName", "node",
                                           "progsyncJoinRequest", "replaces", "replacesAfter"]

    struct Request {
        let node: NodeID
        let org: String
        let publicKey: Curve25519.Signing.PublicKey
        let body: JSONValue
    }

    /// Reads and checks a join request: `{"org", "publicKey", "certificatePin"?, "address"?,
    /// "name"?, "orgName"?, "replaces"?, "replacesAfter"?}`.
    static func request(_ body: JSONValue) throws -> Request {
        guard case .object(let fields) = body else { throw APIError.badRequest("the body must be a join request object") }
        if let unknown = fields.keys.sorted().first(where: { !requestKeys.contains($0) }) {
            throw APIError.badRequest("unknown key \(unknown) in the join request; allowed: \(requestKeys.sorted().joined(separator: ", "))")
        }
        guard let org = body["org"]?.stringValue, ProgrammeSchema.isValidOrgCode(org) else {
            throw APIError.badRequest("org must be an organisation code ([a-z0-9-]{1,64})")
        }
        guard let key = body["publicKey"].flatMap(Membership.publicKey) else {
            throw APIError.badRequest("publicKey must be the node's Ed25519 public key in base64")
        }
        let id = NodeID(publicKey: key)
        if let named = body["node"], named.stringValue != id.rawValue {
            throw APIError.invalid("the request names node \(named.stringValue ?? "?"), but its key is node \(id)")
        }
        for text in ["certificatePin", "address", "name", "orgName"] where body[text] != nil && body[text] != .null && body[text]?.stringValue == nil {
            throw APIError.badRequest("\(text) must be a string")
        }
        return Request(node: id, org: org, publicKey: key, body: body)
    }

    /// The writes that admit the requested node (and, for a key rotation, retire the old key in
    /// the same commit). The schema check of the commit judges the values' shapes.
    func admission(_ request: Request) throws -> [FieldWrite] {
        let body = request.body, id = request.node, org = request.org
        if let existing = replica.registry.node(id) {
            throw APIError(.conflict, "conflict", existing.isRetired
                ? "node \(id) was retired after its commit \(existing.retiredAfter!); a retired node returns only under a new key (progsyncd rotate-key)"
                : "node \(id) is already a partner (org \(existing.org))")
        }
        let record = Membership.recordID(node: id)
        var writes = [FieldWrite(record: record, field: "kind", value: "node"), FieldWrite(record: record, field: "org", value: .string(org)),
                      FieldWrite(record: record, field: "publicKey", value: .string(Base64.encode(Array(request.publicKey.rawRepresentation))))]
        for field in ["certificatePin", "address", "name"] {
            if let value = body[field], value != .null { writes.append(FieldWrite(record: record, field: field, value: value)) }
        }
        if let replacedKey = body["replaces"], replacedKey != .null {
            guard let old = replacedKey.stringValue.flatMap(NodeID.init).flatMap({ replica.registry.node($0) }), old.id != id else {
                throw APIError.notFound("the request replaces node \(replacedKey.stringValue ?? "?"), which is no partner here")
            }
            guard old.org == org else {
                throw APIError.invalid("node \(old.id) is \(old.org)'s; a rotated key stays with its organisation, not \(org)")
            }
            guard old.id != replica.nodeID else { throw APIError(.conflict, "conflict", "a node cannot retire itself") }
            let after: UInt64
            switch body["replacesAfter"] {
            case nil, .null?: after = replica.versionVector[old.id] ?? 0
            case let value?:
                guard let n = value.intValue, n >= 0 else { throw APIError.badRequest("replacesAfter must be a commit number ≥ 0") }
                after = UInt64(n)
            }
            writes += try retirement(of: old, after: after)
        }
        let orgRecord = Membership.recordID(org: org)
        if try replica.storedRows(ofRecord: orgRecord).isEmpty {
            writes += [FieldWrite(record: orgRecord, field: "kind", value: "organisation"),
                       FieldWrite(record: orgRecord, field: "name", value: body["orgName"] ?? .string(org)),
                       FieldWrite(record: orgRecord, field: "coordinator", value: .bool(replica.registry.isCoordinator(org: org)))]
        } else if let name = body["orgName"], name != .null {
            writes.append(FieldWrite(record: orgRecord, field: "name", value: name))
        }
        return writes
    }

    /// The writes that retire `node` after `seq`. A node of the trust root gets its record with
    /// the retirement, so every node can name it.
    func retirement(of node: PartnerRegistry.Node, after seq: UInt64) throws -> [FieldWrite] {
        let record = Membership.recordID(node: node.id)
        var writes = [FieldWrite(record: record, field: "retiredAfter", value: .int(Int64(seq)))]
        if try replica.storedRows(ofRecord: record).isEmpty {
            writes = [FieldWrite(record: record, field: "kind", value: "node"), FieldWrite(record: record, field: "org", value: .string(node.org)),
                      FieldWrite(record: record, field: "publicKey", value: .string(Base64.encode(Array(node.publicKey.rawRepresentation))))]
                + (node.name.map { [FieldWrite(record: record, field: "name", value: .string($0))] } ?? []) + writes
        }
        return writes
    }
}
