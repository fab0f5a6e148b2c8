import Crypto
import Foundation
import Hummingbird
import ProgSyncCore
import ProgSyncStore

/// `/v1/partners`: the partnership as the replica holds it (the trust root plus the coordinators'
/// membership records), and the coordinator's writes to it: admit, remove, revoke. The writes
/// are ordinary signed commits through the group committer; partners judge them by the same
/// rule (`CommitRules.authoriseMembership`).
extension LocalAPI {
    func addPartnerRoutes(to router: Router<LocalRequestContext>) {
        router.get("/v1/partners") { _, _ in try self.partnerList() }
        router.post("/v1/partners") { request, context in try await self.admitPartner(request, context) }
        router.get("/v1/partners/log") { _, _ in try self.partnerLog() }
        router.get("/v1/partners/:node") { _, context in try self.partnerNode(try context.parameters.require("node")) }
        router.post("/v1/partners/:node/remove") { _, context in
            try await self.retirePartner(try context.parameters.require("node"), after: nil, context)
        }
        router.post("/v1/partners/:node/revoke") { request, context in
            let body = try await self.jsonBody(request, limit: self.limits.maxBodyBytes)
            guard case .object(let fields) = body, Set(fields.keys) == ["after"], let after = body["after"]?.intValue, after >= 0 else {
                throw APIError.badRequest("give {\"after\": SEQ}: the node's last commit that stays valid (a whole number ≥ 0)")
            }
            return try await self.retirePartner(try context.parameters.require("node"), after: UInt64(after), context)
        }
    }

    func nodeJSON(_ node: PartnerRegistry.Node, registry: PartnerRegistry) -> JSONValue {
        let o: [String: JSONValue] = [
            "id": .string(node.id.rawValue), "org": .string(node.org), "name": node.name.map { .string($0) } ?? .null,
            "publicKey": .string(Base64.encode(Array(node.publicKey.rawRepresentation))),
            "certificatePin": node.certificatePin.map { .string($0) } ?? .null, "address": node.address.map { .string($0) } ?? .null,
            "state": .string(node.isRetired ? "retired" : "active"),
            "retiredAfter": node.retiredAfter.map { .int(Int64($0)) } ?? .null,
            "admittedBy": .string(node.admittedByRecord ? "record" : "trust-root"),
            "coordinator": .bool(registry.isCoordinator(org: node.org)),
            "held": .int(Int64(replica.versionVector[node.id] ?? 0)),
            "self": .bool(node.id == replica.nodeID),
        ]
        return .object(o)
    }

    func partnerList() throws -> Response {
        let registry = replica.registry
        let codes = Set(registry.orgNames.keys).union(registry.nodes.values.map(\.org)).sorted()
        let orgs: [JSONValue] = codes.map { code in
            .object([
                "code": .string(code), "name": .string(registry.orgNames[code] ?? code), "coordinator": .bool(registry.isCoordinator(org: code)),
                "nodes": .array(registry.nodes.values.filter { $0.org == code }.sorted { $0.id < $1.id }.map { nodeJSON($0, registry: registry) }),
            ])
        }
        return JSONResponse.make(.object(["orgs": .array(orgs), "self": .string(replica.nodeID.rawValue)]))
    }

    /// A node by id or name, this one included (`partner(_:)` gives the others).
    func member(_ key: String) throws -> PartnerRegistry.Node {
        if let me = replica.registry.node(replica.nodeID), key == me.id.rawValue || key == me.name { return me }
        return try partner(key)
    }

    func partnerNode(_ key: String) throws -> Response {
        JSONResponse.make(nodeJSON(try member(key), registry: replica.registry))
    }

    /// Admits a node from its join request (`progsyncd init` writes one):
    /// `{"org", "publicKey", "certificatePin"?, "address"?, "name"?, "orgName"?}`.
    func admitPartner(_ request: Request, _ context: LocalRequestContext) async throws -> Response {
        try requireCoordinator()
        let body = try await jsonBody(request, limit: limits.maxBodyBytes)
        let allowed: Set<String> = ["org", "publicKey", "certificatePin", "address", "name", "orgName", "node", "progsyncJoinRequest",
                                    "replaces", "replacesAfter"]
        guard case .object(let fields) = body else { throw APIError.badRequest("the body must be a join request object") }
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw APIError.badRequest("unknown key \(unknown) in the join request; allowed: \(allowed.sorted().joined(separator: ", "))")
        }
        guard let org = body["org"]?.stringValue, ProgrammeSchema.isValidOrgCode(org) else {
            throw APIError.badRequest("org must be an organisation code ([a-z0-9-]{1,64})")
        }
        guard let keyText = body["publicKey"]?.stringValue, let keyBytes = Base64.decode(keyText), keyBytes.count == 32,
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyBytes)
        else { throw APIError.badRequest("publicKey must be the node's Ed25519 public key in base64") }
        let id = NodeID(publicKey: key)
        if let named = body["node"], named.stringValue != id.rawValue {
            throw APIError.invalid("the request names node \(named.stringValue ?? "?"), but its key is node \(id)")
        }
        for text in ["certificatePin", "address", "name", "orgName"] where body[text] != nil && body[text] != .null && body[text]?.stringValue == nil {
            throw APIError.badRequest("\(text) must be a string")
        }
        if let existing = replica.registry.node(id) {
            throw APIError(.conflict, "conflict", existing.isRetired
                ? "node \(id) was retired after its commit \(existing.retiredAfter!); a retired node returns only under a new key (progsyncd rotate-key)"
                : "node \(id) is already a partner (org \(existing.org))")
        }
        let record = Membership.recordID(node: id)
        var writes = [FieldWrite(record: record, field: "kind", value: "node"), FieldWrite(record: record, field: "org", value: .string(org)),
                      FieldWrite(record: record, field: "publicKey", value: .string(Base64.encode(keyBytes)))]
        for field in ["certificatePin", "address", "name"] {
            if let value = body[field], value != .null { writes.append(FieldWrite(record: record, field: field, value: value)) }
        }
        // A key rotation (`progsyncd rotate-key`): the same commit retires the old key.
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
        if try recordDocument(orgRecord) == nil {
            writes += [FieldWrite(record: orgRecord, field: "kind", value: "organisation"),
                       FieldWrite(record: orgRecord, field: "name", value: body["orgName"] ?? .string(org)),
                       FieldWrite(record: orgRecord, field: "coordinator", value: .bool(replica.registry.isCoordinator(org: org)))]
        } else if let name = body["orgName"], name != .null {
            writes.append(FieldWrite(record: orgRecord, field: "name", value: name))
        }
        let before = replica.registry
        let commit = try await committer.commit(LocalWrite(author: try await commitAuthor(context), writes: writes))
        audit.membershipChanged(from: before, to: replica.registry, origin: "local", actor: await context.author())
        return JSONResponse.make(status: .created, .object([
            "commit": .string("\(commit.ref)"), "node": nodeJSON(try member(id.rawValue), registry: replica.registry),
        ]))
    }

    /// `remove`: retired after the newest commit of it this node holds (its past stays valid).
    /// `revoke`: retired after `after` (a stolen key): what it signed beyond is withheld on every
    /// node, and undone where it was merged.
    func retirePartner(_ key: String, after: UInt64?, _ context: LocalRequestContext) async throws -> Response {
        try requireCoordinator()
        let node = try member(key)
        guard node.id != replica.nodeID else { throw APIError(.conflict, "conflict", "a node cannot retire itself; retire it from another coordinator node") }
        let cutoff = after ?? (replica.versionVector[node.id] ?? 0)
        if let existing = node.retiredAfter, existing <= cutoff {
            throw APIError(.conflict, "conflict", "node \(node.id) is already retired after its commit \(existing); a retirement only moves earlier")
        }
        let writes = try retirement(of: node, after: cutoff)
        let before = replica.registry
        let commit = try await committer.commit(LocalWrite(author: try await commitAuthor(context), writes: writes))
        let undone = try replica.rejectedCommits(limit: 10_000).filter { $0.reason == .retired && $0.ref.origin == node.id }
        audit.membershipChanged(from: before, to: replica.registry, origin: "local", actor: await context.author())
        return JSONResponse.make(.object([
            "commit": .string("\(commit.ref)"), "node": nodeJSON(try member(node.id.rawValue), registry: replica.registry),
            "withheld": .array(undone.map { .object(["commit": .string("\($0.ref)"), "detail": .string($0.detail)]) }),
        ]))
    }

    /// The writes that retire `node` after `seq`. A node of the trust root gets its record with
    /// the retirement, so every node can name it.
    func retirement(of node: PartnerRegistry.Node, after seq: UInt64) throws -> [FieldWrite] {
        let record = Membership.recordID(node: node.id)
        var writes = [FieldWrite(record: record, field: "retiredAfter", value: .int(Int64(seq)))]
        if try recordDocument(record) == nil {
            writes = [FieldWrite(record: record, field: "kind", value: "node"), FieldWrite(record: record, field: "org", value: .string(node.org)),
                      FieldWrite(record: record, field: "publicKey", value: .string(Base64.encode(Array(node.publicKey.rawRepresentation))))]
                + (node.name.map { [FieldWrite(record: record, field: "name", value: .string($0))] } ?? []) + writes
        }
        return writes
    }

    func requireCoordinator() throws {
        guard replica.registry.isCoordinator(org: node.org) else {
            throw APIError(.forbidden, "forbidden", "only a coordinator organisation's node changes the partnership; this node is \(node.org)'s")
        }
    }

    /// Every applied commit that changed the partnership, oldest first.
    func partnerLog() throws -> Response {
        let registry = replica.registry
        let entries: [JSONValue] = try replica.membershipLog().map { entry in
            .object([
                "commit": .string("\(entry.ref)"), "origin": .string(entry.ref.origin.rawValue),
                "org": .string(registry.org(of: entry.ref.origin) ?? "unknown"), "author": .string(entry.author),
                "time": .string(Stamp.iso8601(milliseconds: entry.stamp.milliseconds)),
                "changes": .array(entry.changes.map { .object(["record": .string($0.record), "field": .string($0.field), "value": $0.value]) }),
            ])
        }
        return JSONResponse.make(.object(["log": .array(entries)]))
    }
}
