import ProgSyncCore
import ProgSyncStore

/// What the web app needs of the daemon: the replica, the local write path, the change stream
/// and the partners' state. The daemon implements it; the app adds no write path of its own.
public protocol WebBackend: Sendable {
    var replica: Replica { get }
    /// This node's org: its editors edit what the org may edit.
    var org: String { get }
    /// Commits through the same path as the local API (group commit, ownership, events);
    /// `author` is the person (`web:<name>`), mapped as `author.share` says.
    func commit(author: String, writes: [FieldWrite], resolving: Bool) async throws -> SignedCommit
    /// Live commit events as server-sent-event text, or nil when too many streams are open.
    func subscribe() -> AsyncStream<String>?
    /// One object per partner, as `GET /v1/peers` answers.
    func partners() throws -> [JSONValue]
    /// The newest reconciliation report, if any.
    func latestReconcileReport() -> JSONValue?
}
