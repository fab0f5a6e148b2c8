import Crypto

/// The partnership as replicated data (schema 3): organisations (`org:<code>`) and their nodes
/// (`node:<node id>`) are records like the programme's, in the same signed commits, merge rule and
/// digest, but only a coordinator organisation may write them (`CommitRules.authorise`).
///
/// A node's trust root is the partner registry it was bootstrapped with (`registry.json`, imported
/// as it was): its coordinator organisations and their nodes. Membership records add to it:
/// a node record with a key admits that node; `retiredAfter` retires it, and a node's commits
/// with a seq beyond it are withheld on every node (see `retirement(of:versions:)`).
public enum Membership {
    public static let orgPrefix = "org:"
    public static let nodePrefix = "node:"
    /// The schema version that introduced membership records.
    public static let schema: UInt32 = 3

    public static let orgFields: Set<String> = ["kind", "name", "coordinator"]
    public static let nodeFields: Set<String> = ["kind", "org", "publicKey", "certificatePin", "address", "name", "retiredAfter"]

    public enum Kind: String, Sendable {
        case organisation
        case node
    }

    /// The membership kind a record id names, if any. Runs for every change merged: the first
    /// byte rules out almost every programme id before any prefix is compared.
    public static func kind(ofRecord id: String) -> Kind? {
        switch id.utf8.first {
        case UInt8(ascii: "n"): return id.hasPrefix(nodePrefix) ? .node : nil
        case UInt8(ascii: "o"): return id.hasPrefix(orgPrefix) ? .organisation : nil
        default: return nil
        }
    }

    public static func isMembershipRecord(_ id: String) -> Bool { kind(ofRecord: id) != nil }

    public static func recordID(org code: String) -> String { orgPrefix + code }
    public static func recordID(node id: NodeID) -> String { nodePrefix + id.rawValue }

    /// One change of a membership record under `schema`: the id names a valid org code or node
    /// id, the field belongs to the kind, and the value has its shape. A node's key must be the
    /// key its id is made from, so a record cannot bind a name to someone else's key.
    public static func validate(record: String, field: String, value: JSONValue, canonicalSize: Int,
                                schema: UInt32) throws(SchemaError) {
        guard schema >= Self.schema, let kind = kind(ofRecord: record) else {
            throw SchemaError(field: field, message: "record \(record.prefix(140)) is a membership record, which needs schema \(Self.schema)")
        }
        if canonicalSize > ProgrammeSchema.maxValueBytes {
            throw SchemaError(field: field, message: "value larger than \(ProgrammeSchema.maxValueBytes) bytes")
        }
        let key = String(record.dropFirst(kind == .node ? nodePrefix.count : orgPrefix.count))
        switch kind {
        case .organisation:
            guard ProgrammeSchema.isValidOrgCode(key) else {
                throw SchemaError(field: field, message: "an organisation record is org:<code> with a code of [a-z0-9-]{1,64}")
            }
            guard orgFields.contains(field) else {
                throw SchemaError(field: field, message: "not a field of an organisation; allowed: \(orgFields.sorted().joined(separator: ", "))")
            }
        case .node:
            guard let id = NodeID(key) else {
                throw SchemaError(field: field, message: "a node record is node:<node id> (16 base32 characters)")
            }
            guard nodeFields.contains(field) else {
                throw SchemaError(field: field, message: "not a field of a node; allowed: \(nodeFields.sorted().joined(separator: ", "))")
            }
            if field == "publicKey" {
                guard let key = publicKey(value) else {
                    throw SchemaError(field: field, message: "must be an Ed25519 public key in base64")
                }
                guard NodeID(publicKey: key) == id else {
                    throw SchemaError(field: field, message: "the key's node id is \(NodeID(publicKey: key)), not \(id)")
                }
            }
        }
        switch field {
        case "kind":
            guard value.stringValue == kind.rawValue else { throw SchemaError(field: field, message: "must be \(kind.rawValue) for \(record.prefix(140))") }
        case "name":
            guard value == .null || (value.stringValue.map { $0.utf8.count <= 200 } ?? false) else {
                throw SchemaError(field: field, message: "must be a string of at most 200 bytes")
            }
        case "coordinator":
            guard value.boolValue != nil else { throw SchemaError(field: field, message: "must be true or false") }
        case "org":
            guard let s = value.stringValue, ProgrammeSchema.isValidOrgCode(s) else {
                throw SchemaError(field: field, message: "must be an organisation code ([a-z0-9-]{1,64})")
            }
        case "certificatePin":
            guard value == .null || (value.stringValue.map(isCertificatePin) ?? false) else {
                throw SchemaError(field: field, message: "must be sha256//<base64 of 32 bytes>")
            }
        case "address":
            guard value == .null || (value.stringValue.map(isAddress) ?? false) else {
                throw SchemaError(field: field, message: "must be an http:// or https:// address of at most 500 bytes")
            }
        case "retiredAfter":
            guard let n = value.intValue, n >= 0 else {
                throw SchemaError(field: field, message: "must be a whole number ≥ 0: the node's last seq that stays valid")
            }
        default:
            break
        }
    }

    public static func publicKey(_ value: JSONValue) -> Curve25519.Signing.PublicKey? {
        guard let text = value.stringValue, let bytes = Base64.decode(text) else { return nil }
        return try? Curve25519.Signing.PublicKey(rawRepresentation: bytes)
    }

    static func isCertificatePin(_ s: String) -> Bool {
        s.hasPrefix("sha256//") && Base64.decode(String(s.dropFirst(8)))?.count == 32
    }

    static func isAddress(_ s: String) -> Bool {
        s.utf8.count <= 500 && (s.hasPrefix("https://") || s.hasPrefix("http://")) && !s.contains(where: { $0.isWhitespace })
    }

    /// A node's retirement: the smallest `retiredAfter` any applied version ever gave it, so a
    /// later version, a conflict or a relay can move it earlier but never back. A retired
    /// node returns only under a new key.
    public static func retirement(of versions: [JSONValue]) -> UInt64? {
        versions.compactMap { $0.intValue }.filter { $0 >= 0 }.map { UInt64($0) }.min()
    }

    /// The registry in force: the trust root, then every organisation and node the records
    /// describe (a record's name, pin and address replace the bootstrap's), then retirements.
    /// `records` holds each membership record's current fields; `retired` each node's
    /// retirement over all versions (`retirement(of:)`).
    public static func registry(trustRoot: PartnerRegistry, records: [String: [String: JSONValue]],
                                retired: [NodeID: UInt64]) -> PartnerRegistry {
        var registry = trustRoot
        for (id, fields) in records.sorted(by: { $0.key < $1.key }) {
            switch kind(ofRecord: id) {
            case .organisation:
                let code = String(id.dropFirst(orgPrefix.count))
                if let name = fields["name"]?.stringValue { registry.setOrgName(code, name) }
            case .node:
                guard let key = fields["publicKey"].flatMap(publicKey), let org = fields["org"]?.stringValue,
                      fields["kind"]?.stringValue == Kind.node.rawValue, recordID(node: NodeID(publicKey: key)) == id
                else { continue }
                var node = PartnerRegistry.Node(org: org, publicKey: key, name: fields["name"]?.stringValue,
                                                certificatePin: fields["certificatePin"]?.stringValue,
                                                address: fields["address"]?.stringValue)
                node.admittedByRecord = true
                registry.add(node)
                if registry.orgNames[org] == nil { registry.setOrgName(org, org) }
            case nil:
                continue
            }
        }
        for (id, after) in retired { registry.retire(id, after: after) }
        return registry
    }
}
