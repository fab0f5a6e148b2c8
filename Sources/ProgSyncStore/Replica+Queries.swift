import Foundation
import GRDB
import ProgSyncCore

/// A field as the replica holds it: the winning version and any conflict losers.
public struct FieldState: Sendable, Hashable {
    public var value: JSONValue
    public var version: FieldVersion
    public var losers: [FieldVersion]
}

public struct ConflictEntry: Sendable, Hashable {
    public var record: String
    public var field: String
    public var winner: FieldVersion
    public var losers: [FieldVersion]
}

public struct StoredCommit: Sendable {
    public var lsn: Int64
    public var commit: SignedCommit
    public var refused: Bool
}

extension Replica {
    /// Every field of one record, or an empty dictionary when it does not exist.
    public func fields(ofRecord record: String) throws -> [String: FieldState] {
        try pool.read { db in try Self.fields(db, record: record) }
    }

    static func fields(_ db: Database, record: String) throws -> [String: FieldState] {
        var out: [String: FieldState] = [:]
        let rows = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT field, value, stamp, origin, seq FROM fields WHERE record = ?"), arguments: [record])
        for row in rows {
            let version = try version(value: row[1], stamp: row[2], origin: row[3], seq: row[4])
            let value = (try? JSONParser.parse(version.value)) ?? .null
            out[row[0]] = FieldState(value: value, version: version, losers: [])
        }
        let conflictRows = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT field, value, stamp, origin, seq FROM conflicts WHERE record = ?"), arguments: [record])
        for row in conflictRows {
            let field: String = row[0]
            out[field]?.losers.append(try version(value: row[1], stamp: row[2], origin: row[3], seq: row[4]))
        }
        for key in out.keys { out[key]!.losers.sort { FieldVersion.wins($0, over: $1) } }
        return out
    }

    /// All winners, keyed by record and field: for tests and reconciliation.
    public func allWinners() throws -> [String: [String: FieldVersion]] {
        try pool.read { db in
            var out: [String: [String: FieldVersion]] = [:]
            let rows = try Row.fetchCursor(db, sql: "SELECT record, field, value, stamp, origin, seq FROM fields")
            while let row = try rows.next() {
                out[row[0], default: [:]][row[1]] = try Self.version(value: row[2], stamp: row[3], origin: row[4], seq: row[5])
            }
            return out
        }
    }

    /// Open conflicts, each with its winner and losers, ordered by record and field.
    public func conflicts(record: String? = nil) throws -> [ConflictEntry] {
        try pool.read { db in
            var sql = """
                SELECT c.record, c.field, c.value, c.stamp, c.origin, c.seq, f.value, f.stamp, f.origin, f.seq
                FROM conflicts c JOIN fields f ON f.record = c.record AND f.field = c.field
                """
            var arguments: StatementArguments = []
            if let record {
                sql += " WHERE c.record = ?"
                arguments = [record]
            }
            sql += " ORDER BY c.record, c.field"
            var entries: [ConflictEntry] = []
            for row in try Row.fetchAll(db, sql: sql, arguments: arguments) {
                let loser = try Self.version(value: row[2], stamp: row[3], origin: row[4], seq: row[5])
                let winner = try Self.version(value: row[6], stamp: row[7], origin: row[8], seq: row[9])
                if let last = entries.last, last.record == row[0] as String, last.field == row[1] as String {
                    entries[entries.count - 1].losers.append(loser)
                } else {
                    entries.append(ConflictEntry(record: row[0], field: row[1], winner: winner, losers: [loser]))
                }
            }
            for i in entries.indices { entries[i].losers.sort { FieldVersion.wins($0, over: $1) } }
            return entries
        }
    }

    public func heldCommits() throws -> [HeldCommit] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT origin, seq, hash, stamp, reason, detail, received_at FROM held ORDER BY origin, seq")
                .compactMap { row in
                    guard let origin = NodeID(row[0]) else { return nil }
                    return HeldCommit(
                        ref: CommitRef(origin: origin, seq: UInt64(row[1] as Int64)), hash: [UInt8](row[2] as Data),
                        stamp: Stamp(rawValue: UInt64(bitPattern: row[3])), reason: .init(row[4]), detail: row[5],
                        receivedAt: UInt64(row[6] as Int64))
                }
        }
    }

    public func rejectedCommits(limit: Int = 1000) throws -> [RejectedCommit] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT origin, seq, hash, reason, detail, at FROM rejected ORDER BY id DESC LIMIT ?", arguments: [limit])
                .compactMap { row in
                    guard let origin = NodeID(row[0]) else { return nil }
                    return RejectedCommit(
                        ref: CommitRef(origin: origin, seq: UInt64(row[1] as Int64)), hash: [UInt8](row[2] as Data),
                        reason: .init(row[3]), detail: row[4], at: UInt64(row[5] as Int64))
                }
        }
    }

    /// Stored commits in arrival order after `lsn`: the changes feed.
    public func commits(afterLSN lsn: Int64, limit: Int) throws -> [StoredCommit] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT lsn, body, sig, status FROM commits WHERE lsn > ? ORDER BY lsn LIMIT ?", arguments: [lsn, limit]
            ).map { row in
                StoredCommit(
                    lsn: row[0], commit: try SignedCommit(canonicalBytes: [UInt8](row[1] as Data), signature: [UInt8](row[2] as Data)),
                    refused: (row[3] as Int) != 0)
            }
        }
    }

    public var lastLSN: Int64 {
        get throws { try pool.read { db in try Int64.fetchOne(db, sql: "SELECT max(lsn) FROM commits") ?? 0 } }
    }

    /// The applied commits that touched a record, oldest first.
    public func history(ofRecord record: String) throws -> [StoredCommit] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: """
                    SELECT c.lsn, c.body, c.sig FROM record_commits r JOIN commits c ON c.lsn = r.lsn
                    WHERE r.record = ? ORDER BY c.stamp, c.origin
                    """, arguments: [record]
            ).map { row in
                StoredCommit(
                    lsn: row[0], commit: try SignedCommit(canonicalBytes: [UInt8](row[1] as Data), signature: [UInt8](row[2] as Data)),
                    refused: false)
            }
        }
    }

    /// The author of the commit that wrote a version.
    public func author(of ref: CommitRef) throws -> String? {
        try pool.read { db in
            guard let body = try Data.fetchOne(db, sql: "SELECT body FROM commits WHERE origin = ? AND seq = ?",
                                               arguments: [ref.origin.rawValue, Int64(ref.seq)]) else { return nil }
            return try Commit(canonicalBytes: [UInt8](body)).author
        }
    }
}
