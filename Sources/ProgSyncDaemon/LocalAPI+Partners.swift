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
        addInviteRoutes(to: router)
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

    /// Admits a node from its join request (`progsyncd init --request` writes one).
    func admitPartner(_ request: Request, _ context: LocalRequestContext) async throws -> Response {
        try requireCoordinator()
        let joining = try PartnerAdmission.request(try await jsonBody(request, limit: limits.maxBodyBytes))
        let writes = try PartnerAdmission(replica: replica).admission(joining)
        let before = replica.registry
        let commit = try await committer.commit(LocalWrite(author: try await commitAuthor(context), writes: writes))
        audit.membershipChanged(from: before, to: replica.registry, origin: "local", actor: await context.author())
        return JSONResponse.make(status: .created, .object([
            "commit": .string("\(commit.ref)"), "node": nodeJSON(try member(joining.node.rawValue), registry: replica.registry),
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
        let writes = try PartnerAdmission(replica: replica).retirement(of: node, after: cutoff)
        let before = replica.registry
        let commit = try await committer.commit(LocalWrite(author: try await commitAuthor(context), writes: writes))
        let undone = try replica.rejectedCommits(limit: 10_000).filter { $0.reason == .retired && $0.ref.origin == node.id }
        audit.membershipChanged(from: before, to: replica.registry, origin: "local", actor: await context.author())
        return JSONResponse.make(.object([
            "commit": .string("\(commit.ref)"), "node": nodeJSON(try member(node.id.rawValue), registry: replica.registry),
            "withheld": .array(undone.map { .object(["commit": .string("\($0.ref)"), "detail": .string($0.detail)]) }),
        ]))
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

/// What a coordinator node needs to issue invites.
struct Joining: Sendable {
    let invites: InviteBook
    /// This node's TLS pin, which the new node pins when it calls.
    let certificatePin: String
    /// Whether a peer listener runs: without one, nobody could present an invite here.
    let listening: Bool
}

extension LocalAPI {
    static let defaultInviteSeconds: Int64 = 7 * 86_400
    static let maxInviteSeconds: Int64 = 90 * 86_400

    func addInviteRoutes(to router: Router<LocalRequestContext>) {
        router.get("/v1/partners/invites") { _, _ in try self.inviteList() }
        router.post("/v1/partners/invites") { request, context in try await self.invite(request, context) }
    }

    /// `{"org", "name"?, "orgName"?, "expiresInSeconds"?, "address"?}` → a signed invite with its
    /// secret, shown once: this node keeps only the secret's hash.
    func invite(_ request: Request, _ context: LocalRequestContext) async throws -> Response {
        try requireCoordinator()
        guard let joining else { throw APIError(.internalServerError, "internal", "this node was built without an invite book") }
        let body = try await jsonBody(request, limit: limits.maxBodyBytes)
        let allowed: Set<String> = ["org", "name", "orgName", "expiresInSeconds", "address"]
        guard case .object(let fields) = body else { throw APIError.badRequest("the body must be an object with org") }
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw APIError.badRequest("unknown key \(unknown); allowed: \(allowed.sorted().joined(separator: ", "))")
        }
        guard let org = body["org"]?.stringValue, ProgrammeSchema.isValidOrgCode(org) else {
            throw APIError.badRequest("org must be an organisation code ([a-z0-9-]{1,64})")
        }
        for key in ["name", "orgName", "address"] where body[key] != nil && body[key] != .null && body[key]?.stringValue == nil {
            throw APIError.badRequest("\(key) must be a string")
        }
        for key in ["name", "orgName"] {
            if let text = body[key]?.stringValue, text.isEmpty || text.utf8.count > 200 { throw APIError.invalid("\(key) must be 1–200 bytes") }
        }
        let seconds = body["expiresInSeconds"].map { $0.intValue } ?? Self.defaultInviteSeconds
        guard let seconds, (1...Self.maxInviteSeconds).contains(seconds) else {
            throw APIError.badRequest("expiresInSeconds must be a whole number from 1 to \(Self.maxInviteSeconds) (90 days)")
        }
        guard joining.listening else {
            throw APIError(.conflict, "conflict", "this node has no peer listener (progsync.peers.listen), so a new node could not present the invite; configure one and restart")
        }
        let me = replica.registry.node(replica.nodeID)
        guard let address = body["address"]?.stringValue ?? me?.address else {
            throw APIError(.conflict, "conflict", "no address for this node in the partnership; give the address partners reach its peer listener at (--address https://HOST:PORT)")
        }
        guard address.hasPrefix("https://"), !address.contains(where: \.isWhitespace), address.utf8.count <= 500 else {
            throw APIError.badRequest("address must be an https:// address, e.g. https://progsync.jenv.example:7441")
        }
        let now = Replica.wallClockMilliseconds()
        var secret = [UInt8](repeating: 0, count: 32)
        var id = [UInt8](repeating: 0, count: 16)
        for i in secret.indices { secret[i] = UInt8.random(in: 0...255) }
        for i in id.indices { id[i] = UInt8.random(in: 0...255) }
        var invite = Invite(id: Hex.encode(id), org: org, name: body["name"]?.stringValue, orgName: body["orgName"]?.stringValue,
                            expiresAt: now + UInt64(seconds) * 1000, issuer: node.identity, issuerOrg: node.org, issuerAddress: address,
                            issuerPin: joining.certificatePin, trustRoot: replica.trustRoot.json, secret: secret)
        try invite.sign(with: node.identity)
        try joining.invites.add(InviteBook.Entry(id: invite.id, org: org, name: invite.name, createdAt: now, expiresAt: invite.expiresAt,
                                                 secretHash: Array(SHA256.hash(data: secret))))
        audit.operatorAction("invite", object: "org:\(org)", result: "issued", user: await context.author(),
                             detail: "invite \(invite.id) until \(Stamp.iso8601(milliseconds: invite.expiresAt))")
        return JSONResponse.make(status: .created, invite.json)
    }

    func inviteList() throws -> Response {
        let now = Replica.wallClockMilliseconds()
        let list = (joining?.invites.all ?? []).sorted { $0.createdAt < $1.createdAt }.map { entry -> JSONValue in
            guard case .object(var o) = entry.json else { return entry.json }
            o["secretHash"] = nil
            o["state"] = .string(entry.usedAt != nil ? "used" : entry.expiresAt <= now ? "expired" : "open")
            return .object(o)
        }
        return JSONResponse.make(.object(["invites": .array(list)]))
    }
}
