import Foundation
import GRDB
import Logging
import ProgSyncCore

/// An applied commit written under a schema newer than this node's, waiting to be judged in full.
public struct NewerSchemaCommit: Sendable, Equatable {
    public var ref: CommitRef
    /// The schema version it was written under: what this node needs to judge it.
    public var schema: UInt32
    /// What in it this node's schema does not allow, one line per change (may be empty).
    public var gaps: [String]
}

extension Replica {
    public func newerSchemaCommits(limit: Int = 1000) throws -> [NewerSchemaCommit] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT origin, seq, schema, gaps FROM newer_schema ORDER BY lsn LIMIT ?", arguments: [limit])
                .compactMap { row in
                    guard let origin = NodeID(row[0] as String) else { return nil }
                    let gaps: String = row[3]
                    return NewerSchemaCommit(ref: CommitRef(origin: origin, seq: UInt64(row[1] as Int64)), schema: UInt32(row[2] as Int64),
                                             gaps: gaps.isEmpty ? [] : gaps.components(separatedBy: "; "))
                }
        }
    }

    /// How many commits wait for a newer schema, and the newest schema they need.
    public func newerSchemaSummary() throws -> (count: Int, needs: UInt32?) {
        try pool.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT count(*), max(schema) FROM newer_schema")
            return (row?[0] ?? 0, (row?[1] as Int64?).map { UInt32($0) })
        }
    }

    /// Runs on every open: commits kept for a schema this node now knows are judged by it. Valid
    /// ones (the usual case: their author's node checked them) simply leave the list; their
    /// changes were merged on arrival. One that this schema refuses becomes refused, and its
    /// records are rebuilt from the log without it, as a node that knew the schema all along
    /// holds them.
    func judgeNewerSchemaAgain() throws {
        let schema = configuration.schemaVersion
        let refusedRecords: Set<String> = try write { ctx in
            var records = Set<String>()
            let rows = try Row.fetchAll(ctx.db, sql: """
                SELECT n.lsn, c.body, c.sig FROM newer_schema n JOIN commits c ON c.lsn = n.lsn WHERE n.schema <= ?
                """, arguments: [Int64(schema)])
            for row in rows {
                let lsn: Int64 = row[0]
                try ctx.db.execute(sql: "DELETE FROM newer_schema WHERE lsn = ?", arguments: [lsn])
                let signed = try SignedCommit(canonicalBytes: [UInt8](row[1] as Data), signature: [UInt8](row[2] as Data))
                guard let verdict = CommitRules.validate(signed.commit, schema: schema) else { continue }
                try ctx.db.execute(sql: "UPDATE commits SET status = 1 WHERE lsn = ?", arguments: [lsn])
                try ctx.db.execute(sql: "DELETE FROM record_commits WHERE lsn = ?", arguments: [lsn])
                try ctx.logRejection(signed, verdict)
                records.formUnion(signed.commit.changes.map(\.record))
            }
            if !rows.isEmpty {
                configuration.logger.notice("judged commits kept for a newer schema", metadata: [
                    "commits": "\(rows.count)", "refused": "\(ctx.report.rejected.count)", "schema": "\(schema)"])
            }
            return records
        }
        if !refusedRecords.isEmpty { _ = try rebuild(buckets: [], records: refusedRecords) }
    }
}
