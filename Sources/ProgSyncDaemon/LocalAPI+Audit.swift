import Foundation
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import ProgSyncCore

/// The audit log on the local API: `GET /v1/audit` lists events, `GET /v1/audit/verify` checks the chain.
extension LocalAPI {
    func addAuditRoutes(to router: Router<LocalRequestContext>) {
        router.get("/v1/audit") { request, _ in try await self.auditEvents(request) }
        router.get("/v1/audit/verify") { _, _ in try await self.auditVerify() }
    }

    static let maxAuditPage = 10_000

    func auditEvents(_ request: Request) async throws -> Response {
        let q = request.uri.queryParameters
        var since: UInt64?
        if let text = q["since"].map(String.init) {
            guard let stamp = Self.parseStamp(text) else {
                throw APIError.badRequest(Self.sinceHelp)
            }
            since = stamp.milliseconds
        }
        let after = try q["after"].map { text -> Int64 in
            guard let n = Int64(text), n >= 0 else { throw APIError.badRequest("after must be an event seq ≥ 0") }
            return n
        } ?? 0
        let limit = try q["limit"].map { text -> Int in
            guard let n = Int(text), (1...Self.maxAuditPage).contains(n) else {
                throw APIError.badRequest("limit must be a whole number from 1 to \(Self.maxAuditPage)")
            }
            return n
        } ?? 1000
        let audit = audit, sinceMs = since
        await audit.flushed()
        let (events, more) = try await AuditLog.onReader { try audit.events(since: sinceMs, after: after, limit: limit) }
        return JSONResponse.make(.object(["events": .array(events), "more": .bool(more)]))
    }

    func auditVerify() async throws -> Response {
        let audit = audit
        await audit.flushed()
        let (v, head) = try await AuditLog.onReader { () -> (AuditChain.Verification, AuditChain.Head?) in
            let (log, head) = try audit.contents()
            return (AuditChain.verify(log, head: head), head)
        }
        return JSONResponse.make(.object([
            "ok": .bool(v.ok), "lines": .int(Int64(v.lines)),
            "head": head?.json ?? .null, "last": v.last?.json ?? .null,
            "problems": .array(v.problems.map { .object(["line": .int(Int64($0.line)), "message": .string($0.message)]) }),
        ]))
    }
}

/// Records every refused write on the local API: the outermost middleware, so it sees the
/// answer the client got (`APIError.response` leaves the error on the request's context).
struct LocalWriteAudit: RouterMiddleware {
    typealias Context = LocalRequestContext
    let audit: AuditLog

    /// The routes that change the replica (reads, `sync` and `reconcile` are not writes).
    static let writeRoutes: Set<String> = [
        "PUT /v1/records/{id}", "PATCH /v1/records/{id}", "DELETE /v1/records/{id}", "POST /v1/conflicts/{id}/resolve",
        "POST /v1/quarantine/{hash}/release", "POST /v1/import", "POST /v1/bundle",
    ]

    func handle(_ request: Request, context: LocalRequestContext, next: (Request, LocalRequestContext) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        guard response.status.code >= 400, let template = context.endpointPath else { return response }
        let route = "\(request.method) \(template)"
        guard Self.writeRoutes.contains(route) else { return response }
        let error = context.refusal.withLockedValue { $0 } ?? APIError(response.status, "error", response.status.reasonPhrase)
        audit.refusedLocalWrite(request: route, object: Self.object(path: request.uri.path, template: template),
                                user: await context.author(), error: error)
        return response
    }

    /// The path segment in the template's `{…}` place (decoded), or the route's last word.
    static func object(path: String, template: String) -> String {
        let parts = path.split(separator: "/"), names = template.split(separator: "/")
        for (part, name) in zip(parts, names) where name.hasPrefix("{") {
            return String(part).removingPercentEncoding ?? String(part)
        }
        return String(names.last ?? "")
    }
}
