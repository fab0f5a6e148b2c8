import Foundation
import GRDB
import ProgSyncCore
import Synchronization

/// A field as the replica holds it: the winning version and any conflict losers.
public struct FieldState: Sendable, Hashable {
    public var value: JSONValue
    public var version: FieldVersion
    public var losers: [FieldVersion]

    public init(value: JSONValue, version: FieldVersion, losers: [FieldVersion] = []) {
        self.value = value
        self.version = version
        self.losers = losers
    }
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

    /// Commits withheld because their node was retired before them (`partners remove|revoke`):
    /// stored and relayed, never merged; listed so people can enter again what should stay.
    public func withheldCommits(limit: Int = 1000) throws -> [SignedCommit] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT body, sig FROM commits INDEXED BY commits_withheld WHERE status = 2 ORDER BY lsn LIMIT ?", arguments: [limit]).map { row in
                try SignedCommit(canonicalBytes: [UInt8](row[0] as Data), signature: [UInt8](row[1] as Data))
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

    /// A stored commit as bytes, for relaying: no decoding, since the receiver verifies anyway.
    public struct RawCommit: Sendable {
        public var lsn: Int64
        public var origin: String
        public var seq: UInt64
        public var body: [UInt8]
        public var signature: [UInt8]
    }

    public func rawCommits(afterLSN lsn: Int64, limit: Int) throws -> [RawCommit] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT lsn, origin, seq, body, sig FROM commits WHERE lsn > ? ORDER BY lsn LIMIT ?", arguments: [lsn, limit]
            ).map { row in
                RawCommit(lsn: row[0], origin: row[1], seq: UInt64(row[2] as Int64), body: [UInt8](row[3] as Data), signature: [UInt8](row[4] as Data))
            }
        }
    }

    public var lastLSN: Int64 {
        get throws { state.withLock { $0.lastLSN } }
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

    /// The author of a commit as this node shows it: names behind its own pseudonyms resolved.
    public func author(of ref: CommitRef) throws -> String? {
        try pool.read { db in
            try String.fetchOne(
                db.cachedStatement(sql: RecordReader.authorSQL),
                arguments: [ref.origin.rawValue, Int64(bitPattern: ref.seq)])
        }
    }

    /// Remembers the name behind a pseudonym this node puts on its commits; kept on this node only.
    public func rememberLocalAuthor(pseudonym: String, name: String) throws {
        try pool.write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO local_authors (origin, pseudonym, name) VALUES (?, ?, ?)",
                arguments: [nodeID.rawValue, pseudonym, name])
        }
    }
}

/// Filters for listing records; every given filter must match.
public struct RecordQuery: Sendable, Hashable {
    public var kind: String?
    public var status: String?
    public var owner: String?
    public var result: String?
    public var actionLine: String?
    public var text: String?
    /// Records whose `partners` list holds this name.
    public var partner: String?
    public var deleted: Deleted = .exclude
    public var limit = 100
    public var offset = 0

    public enum Deleted: String, Sendable { case exclude, include, only }
    public init() {}
}

extension Replica {
    /// Record ids matching a query, in id order, and how many match in all: a page of the
    /// filter's whole list, which is kept until the next commit.
    public func recordIDs(_ query: RecordQuery) throws -> (ids: [String], total: Int) {
        var filter = query
        (filter.limit, filter.offset) = (0, 0)
        let all = try lists.value(.records(filter)) { try matchingIDs(filter) }
        return (Array(all.dropFirst(query.offset).prefix(query.limit)), all.count)
    }

    private func matchingIDs(_ query: RecordQuery) throws -> [String] {
        var conditions: [String] = []
        var arguments: [any DatabaseValueConvertible] = []
        func fieldEquals(_ field: String, _ value: String?) {
            guard let value else { return }
            conditions.append("EXISTS (SELECT 1 FROM fields x WHERE x.record = k.record AND x.field = ? AND x.value = ?)")
            arguments.append(field)
            arguments.append(JSONValue.string(value).canonicalString)
        }
        fieldEquals("status", query.status)
        fieldEquals("owner", query.owner)
        fieldEquals("result", query.result)
        fieldEquals("actionLine", query.actionLine)
        if let kind = query.kind {
            conditions.append("k.value = ?")
            arguments.append(JSONValue.string(kind).canonicalString)
        } else {
            // The partnership's own records (node:, org:) are listed by `partners`, not here.
            conditions.append("NOT \(Membership.sqlRecords("k.record"))")
        }
        if let partner = query.partner {
            conditions.append("""
                EXISTS (SELECT 1 FROM fields p, json_each(p.value) j WHERE p.record = k.record AND p.field = 'partners' AND j.value = ?)
                """)
            arguments.append(partner)
        }
        if let text = query.text, !text.isEmpty {
            conditions.append("""
                EXISTS (SELECT 1 FROM fields t WHERE t.record = k.record AND t.field IN ('title', 'explanation', 'theme')
                AND json_extract(t.value, '$') LIKE ? ESCAPE '\\')
                """)
            let escaped = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                .replacingOccurrences(of: "_", with: "\\_")
            arguments.append("%" + escaped + "%")
        }
        let deletedCheck = "EXISTS (SELECT 1 FROM fields d WHERE d.record = k.record AND d.field = 'deleted' AND d.value = 'true')"
        switch query.deleted {
        case .exclude: conditions.append("NOT " + deletedCheck)
        case .only: conditions.append(deletedCheck)
        case .include: break
        }
        let whereClause = "k.field = 'kind'" + conditions.map { " AND " + $0 }.joined()
        return try pool.read { db in
            try String.fetchAll(db, sql: "SELECT k.record FROM fields k WHERE \(whereClause) ORDER BY k.record",
                                arguments: StatementArguments(arguments))
        }
    }

    public struct Counts: Sendable {
        public var byKind: [String: Int]
        public var deleted: Int
        public var conflicts: Int
        public var held: Int
        public var rejected: Int
        public var fields: Int
    }

    /// The cheap counts (no scan of the fields table): open conflicts, held and rejected commits.
    public func attentionCounts() throws -> (conflicts: Int, held: Int, rejected: Int) {
        try pool.read { db in try Self.attentionCounts(db) }
    }

    static func attentionCounts(_ db: Database) throws -> (conflicts: Int, held: Int, rejected: Int) {
        (try Int.fetchOne(db, sql: "SELECT count(*) FROM (SELECT DISTINCT record, field FROM conflicts)") ?? 0,
         try Int.fetchOne(db, sql: "SELECT count(*) FROM held") ?? 0,
         try Int.fetchOne(db, sql: "SELECT count(*) FROM rejected") ?? 0)
    }

    public func counts() throws -> Counts {
        try pool.read { db in
            var byKind: [String: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT value, count(*) FROM fields WHERE field = 'kind' GROUP BY value") {
                let value: String = row[0]
                byKind[(try? JSONParser.parse(value).stringValue ?? value) ?? value] = row[1]
            }
            let attention = try Self.attentionCounts(db)
            return Counts(
                byKind: byKind,
                deleted: try Int.fetchOne(db, sql: "SELECT count(*) FROM fields WHERE field = 'deleted' AND value = 'true'") ?? 0,
                conflicts: attention.conflicts, held: attention.held, rejected: attention.rejected,
                fields: try Int.fetchOne(db, sql: "SELECT count(*) FROM fields") ?? 0)
        }
    }
}

extension Replica {
    public struct PeerCursor: Sendable, Equatable {
        public var pulled: Int64
        public var pushed: Int64
    }

    public func peerCursor(_ peer: NodeID) throws -> PeerCursor {
        try pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT pulled, pushed FROM peer_cursors WHERE peer = ?", arguments: [peer.rawValue])
            else { return PeerCursor(pulled: 0, pushed: 0) }
            return PeerCursor(pulled: row[0], pushed: row[1])
        }
    }

    /// Sets a peer's pull cursor; pass it to `apply(_:inTransaction:)` so it lands with the commits.
    public static func setPulled(_ db: Database, peer: NodeID, to lsn: Int64) throws {
        try db.execute(sql: """
            INSERT INTO peer_cursors (peer, pulled) VALUES (?, ?)
            ON CONFLICT (peer) DO UPDATE SET pulled = excluded.pulled
            """, arguments: [peer.rawValue, lsn])
    }

    /// Moves the pull cursor forward only: a partner that dials this node said its feed up to
    /// `lsn` has been pushed here (`PairDialling`), so a later pull of ours starts there.
    public func advancePulled(peer: NodeID, to lsn: Int64) throws {
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO peer_cursors (peer, pulled) VALUES (?, ?)
                ON CONFLICT (peer) DO UPDATE SET pulled = max(pulled, excluded.pulled)
                """, arguments: [peer.rawValue, lsn])
        }
    }

    public func setPushed(peer: NodeID, to lsn: Int64) throws {
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO peer_cursors (peer, pushed) VALUES (?, ?)
                ON CONFLICT (peer) DO UPDATE SET pushed = max(pushed, excluded.pushed)
                """, arguments: [peer.rawValue, lsn])
        }
    }
}

/// One version of one field: what an import names as the basis of a spreadsheet cell.
public struct FieldVersionKey: Sendable, Hashable {
    public var record: String
    public var field: String
    public var ref: CommitRef

    public init(record: String, field: String, ref: CommitRef) {
        self.record = record
        self.field = field
        self.ref = ref
    }
}

/// What an import compares a file against, read in one snapshot.
public struct ImportSnapshot: Sendable {
    /// The current fields of each record named in the file (empty for a new record).
    public var fields: [String: [String: FieldState]]
    /// The value each named basis version wrote; a version this replica does not hold is absent.
    public var basisValues: [FieldVersionKey: JSONValue]
}

extension Replica {
    /// The records an import names, and the values of the versions its rows were exported from.
    public func importSnapshot(records: [String], bases: Set<FieldVersionKey>) throws -> ImportSnapshot {
        try pool.read { db in
            var fields: [String: [String: FieldState]] = [:]
            for record in records { fields[record] = try Self.fields(db, record: record) }
            var values: [FieldVersionKey: JSONValue] = [:]
            var decoded: [CommitRef: Commit?] = [:]
            for key in bases {
                // Usually the basis is still the winner (or a loser): no need to read the log.
                let state = fields[key.record]?[key.field]
                if let held = state.flatMap({ s in ([s.version] + s.losers).first { $0.ref == key.ref } }) {
                    values[key] = (try? JSONParser.parse(held.value)) ?? .null
                    continue
                }
                if decoded[key.ref] == nil { decoded[key.ref] = try Self.loggedCommit(db, key.ref) }
                let change = decoded[key.ref]??.changes.first { $0.record == key.record && $0.field == key.field }
                if let change { values[key] = change.value }
            }
            return ImportSnapshot(fields: fields, basisValues: values)
        }
    }

    /// An applied (not refused) commit from the log.
    static func loggedCommit(_ db: Database, _ ref: CommitRef) throws -> Commit? {
        let body = try Data.fetchOne(
            db.cachedStatement(sql: "SELECT body FROM commits WHERE origin = ? AND seq = ? AND status = 0"),
            arguments: [ref.origin.rawValue, Int64(ref.seq)])
        return try body.map { try Commit(canonicalBytes: [UInt8]($0)) }
    }

    /// The value an applied commit in the log wrote to a field; nil when it wrote none.
    static func loggedValue(_ db: Database, of ref: CommitRef, record: String, field: String) throws -> JSONValue? {
        try loggedCommit(db, ref)?.changes.first { $0.record == record && $0.field == field }?.value
    }
}
