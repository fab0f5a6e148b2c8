import Crypto
import Foundation
import Hummingbird
import Logging
import NIOSSL
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// `POST /v1/peer/join` on a coordinator's peer listener: a new node presents an invite this
/// node issued, its join request and its key's signature over both. While an invite is open,
/// the TLS handshake lets an unknown certificate through, and `PeerMembershipMiddleware` lets it
/// reach this route only. The admission is the same commit `progsync partners add` makes.
struct PeerJoin: Sendable {
    static let path = "/v1/peer/join"
    static let maxBodyBytes = 256 << 10

    let replica: Replica
    let me: NodeFiles.StoredIdentity
    let committer: GroupCommitter
    let invites: InviteBook
    let audit: AuditLog
    let logger: Logger
    let refusals = JoinRefusals()

    func addRoutes(to router: Router<PeerRequestContext>) {
        router.post(RouterPath(Self.path)) { request, context in try await self.join(request, context) }
    }

    func join(_ request: Request, _ context: PeerRequestContext) async throws -> Response {
        let address = context.channel?.remoteAddress?.ipAddress ?? "unknown"
        if refusals.isBlocked(address) {
            throw APIError(.tooManyRequests, "too-many-requests", "too many refused joins from \(address); wait a minute")
        }
        do {
            return try await admit(request, context)
        } catch {
            let refusal = (error as? APIError) ?? APIError(.internalServerError, "internal", "\(error)")
            refusals.note(address)
            logger.warning("join refused", metadata: ["address": "\(address)", "reason": "\(refusal.code)", "detail": "\(refusal.message)"])
            audit.record(AuditLog.Event(action: "join", object: address, result: "refused", origin: "tls:\(address)", actor: "unknown",
                                        reason: refusal.code, detail: refusal.message, fromNetwork: true))
            throw refusal
        }
    }

    func admit(_ request: Request, _ context: PeerRequestContext) async throws -> Response {
        guard replica.registry.isCoordinator(org: me.org) else {
            throw APIError(.forbidden, "forbidden", "this node is \(me.org)'s, which no longer coordinates the partnership")
        }
        let body = try await PeerAPI.jsonBody(request, limit: Self.maxBodyBytes, maxDepth: 16)
        guard let inviteJSON = body["invite"], let requestJSON = body["request"],
              let proof = body["proof"]?.stringValue.flatMap(Base64.decode) else {
            throw APIError.badRequest("a join is {\"invite\": …, \"request\": …, \"proof\": …}, as progsyncd init --invite sends it")
        }
        let invite = try Invite(json: inviteJSON)
        guard invite.issuer == me.identity.id else {
            throw APIError(.forbidden, "invite-other-node", "this invite was issued by node \(invite.issuer), not by this node (\(me.identity.id)); present it there")
        }
        // The coordinator's words in the invite win: the node's name when it gave one, and the
        // organisation's name only from the invite (a joining node does not rename its org).
        var admitted = requestJSON
        if case .object(var fields) = admitted {
            if let name = invite.name { fields["name"] = .string(name) }
            fields["orgName"] = invite.orgName.map { .string($0) }
            admitted = .object(fields)
        }
        let joining = try PartnerAdmission.request(admitted)
        // An invite admits a new node; retiring one (a key rotation's `replaces`) stays with a
        // coordinator's own `partners add`, or an invite for politie could retire politie's node.
        for key in ["replaces", "replacesAfter"] where requestJSON[key] != nil && requestJSON[key] != .null {
            throw APIError(.forbidden, "forbidden", "a join by invite admits a new node only; a key rotation (\(key)) goes to a coordinator as a request file (progsync partners add)")
        }
        guard joining.publicKey.isValidSignature(proof, for: Invite.proofBytes(inviteID: invite.id, request: requestJSON)) else {
            throw APIError(.forbidden, "forbidden", "the join request is not signed by the key it asks to admit")
        }
        // The certificate on this connection is the one the request asks to pin: the joining
        // node holds the TLS key too.
        if let pin = context.partnerPin {
            guard requestJSON["certificatePin"]?.stringValue == pin else {
                throw APIError(.forbidden, "forbidden", "the join request pins \(requestJSON["certificatePin"]?.stringValue ?? "no certificate"), but this connection presents \(pin)")
            }
        }
        let writes = try PartnerAdmission(replica: replica).admission(joining)
        let entry = try invites.redeem(invite, org: joining.org, node: joining.node)
        let before = replica.registry
        let commit: SignedCommit
        do {
            commit = try await committer.commit(LocalWrite(author: "invite:\(entry.id)", writes: writes))
        } catch {
            invites.release(entry.id)
            throw error
        }
        audit.membershipChanged(from: before, to: replica.registry, origin: "invite:\(entry.id)", actor: "invite:\(entry.id)")
        logger.notice("node joined by invite", metadata: ["node": "\(joining.node)", "org": "\(joining.org)", "invite": "\(entry.id)"])
        return JSONResponse.make(status: .created, .object([
            "commit": .string("\(commit.ref)"), "node": .string(joining.node.rawValue), "org": .string(joining.org),
            "coordinator": .string(me.identity.id.rawValue),
        ]))
    }
}

/// Refused joins per address in the last minute: after ten, that address waits. A secret of 256
/// bits cannot be guessed anyway; this keeps a prober from filling the log.
final class JoinRefusals: Sendable {
    static let limit = 10
    static let window: UInt64 = 60_000
    private let recent = Mutex<[String: [UInt64]]>([:])

    func isBlocked(_ address: String, now: UInt64 = Replica.wallClockMilliseconds()) -> Bool {
        recent.withLock { all in
            let kept = (all[address] ?? []).filter { now &- $0 < Self.window }
            all[address] = kept.isEmpty ? nil : kept
            return kept.count >= Self.limit
        }
    }

    func note(_ address: String, now: UInt64 = Replica.wallClockMilliseconds()) {
        recent.withLock { $0[address, default: []].append(now) }
    }
}
