import Foundation
import GRDB
import ProgSyncCore

/// What operators watch (metrics, health checks) and the writer's heartbeat: small reads, and a
/// way through the replica's one serial write path that changes nothing.
extension Replica {
    /// Runs `body` on the writer, the serial path every write takes, without a transaction. The
    /// heartbeat passes an empty body: if it comes back, the writer is not wedged.
    public func onWriter(_ body: () -> Void = {}) throws {
        try pool.writeWithoutTransaction { _ in body() }
    }

    /// Commits in quarantine by reason, and when the oldest of them arrived (ms since 1970).
    public func quarantineSummary() throws -> (byReason: [String: Int], oldestReceivedAt: UInt64?) {
        try pool.read { db in
            var byReason: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT reason, count(*) FROM held GROUP BY reason") {
                byReason[row[0] as String] = row[1]
            }
            let oldest = try Int64.fetchOne(db, sql: "SELECT min(received_at) FROM held")
            return (byReason, oldest.map { UInt64(max(0, $0)) })
        }
    }

    /// How many of the commits applied with these arrival numbers came from each origin.
    public func originCounts(lsns: ClosedRange<Int64>) throws -> [NodeID: Int] {
        try pool.read { db in
            var out: [NodeID: Int] = [:]
            let rows = try Row.fetchAll(db, sql: "SELECT origin, count(*) FROM commits WHERE lsn BETWEEN ? AND ? AND status = 0 GROUP BY origin",
                                        arguments: [lsns.lowerBound, lsns.upperBound])
            for row in rows {
                guard let id = NodeID(row[0] as String) else { continue }
                out[id] = row[1]
            }
            return out
        }
    }
}
