import Foundation
import Hummingbird
import ProgSyncCore
import ProgSyncStore

extension LocalAPI {
    /// `POST /v1/backup {"path": "/abs/file", "force": false}`: an online, checked copy of the
    /// replica, written by the daemon (so the daemon's user must be able to write there). Writes
    /// go on meanwhile. Off the cooperative pool, one at a time with bundle files.
    func backup(_ request: Request) async throws -> Response {
        let body = try await jsonBody(request, limit: 64 << 10)
        guard case .object(let object) = body else { throw APIError.badRequest("body must be a JSON object {\"path\": …}") }
        if let unknown = object.keys.first(where: { $0 != "path" && $0 != "force" }) {
            throw APIError.badRequest("unknown key \(unknown): give path and, optionally, force")
        }
        guard let path = object["path"]?.stringValue, path.hasPrefix("/"), !path.contains("\u{0}"), !path.hasSuffix("/") else {
            throw APIError.badRequest("path must be an absolute file path")
        }
        let force: Bool
        switch object["force"] {
        case nil: force = false
        case .bool(let value)?: force = value
        default: throw APIError.badRequest("force must be true or false")
        }
        let replica = replica
        let check = try await Self.onBundleQueue { try replica.backup(to: path, overwrite: force) }
        return JSONResponse.make(.object([
            "path": .string(check.path), "bytes": .int(check.bytes), "digest": .string(Hex.encode(check.digest)),
            "takenAt": .string(Stamp.iso8601(milliseconds: check.manifest?.takenAt ?? 0)),
            "integrity": .string("ok"), "schema": .string(check.migrations.last ?? ""),
        ]))
    }

    /// `POST /v1/resume-writes`: the operator ends the wait after a restore.
    func resumeWrites() throws -> Response {
        let waited = replica.ownChainCatchUp != nil
        try replica.resumeLocalWrites()
        return JSONResponse.make(.object(["resumed": .bool(waited)]))
    }

    /// In `status` while local writes wait after a restore; nil otherwise.
    func catchUpJSON() -> JSONValue? {
        guard let wait = replica.ownChainCatchUp else { return nil }
        return .object([
            "restoredAt": .string(Stamp.iso8601(milliseconds: wait.restoredAt)),
            "waitingFor": .array(wait.waitingFor.map { .string(replica.registry.node($0)?.name ?? $0.rawValue) }),
            "ownSeq": .int(Int64(wait.ownSeq)), "heldByPartners": .int(Int64(wait.heldByPartners)),
        ])
    }
}
