import Foundation
import GRDB
import GRDBSQLite
import ProgSyncCore

/// The records as they stood at a moment: the state made by exactly the applied commits stamped
/// at or before `cut` (their signed HLC stamp, not when they arrived here), each field merged by
/// `MergeRule`. Held and refused commits never count. It depends only on which commits a replica
/// holds, never on their arrival order, so every node holding the same commits gives the same
/// answer: the answer a fresh replica would give after applying only those commits.
public struct RecordsAsOf: Sendable {
    public let cut: Stamp
    /// The newest arrival in the log it was computed from: a later arrival may change it.
    public let lastLSN: Int64
    let records: [String: [AsOfFold.Slot]]
    /// Records with a kind, in id order (SQLite's byte order): what a list walks.
    let listed: [String]

    /// The record's stored rows as `Replica.storedRows` gives them (winners by field, then
    /// losers), without authors; empty when the record did not exist then.
    public func rows(ofRecord id: String) -> [StoredFieldRow] {
        records[id].map(AsOfFold.rows) ?? []
    }

    /// Record ids matching a query, in id order, and how many match in all: `Replica.recordIDs`
    /// over this state.
    public func recordIDs(_ query: RecordQuery) -> (ids: [String], total: Int) {
        func winner(_ fields: [AsOfFold.Slot], _ name: String) -> [UInt8]? { fields.first { $0.field == name }?.frontier.winner.value }
        let wanted = [("kind", query.kind), ("status", query.status), ("owner", query.owner), ("result", query.result),
                      ("actionLine", query.actionLine)].compactMap { field, value in
            value.map { (field, Array(JSONValue.string($0).canonicalString.utf8)) }
        }
        let needle = query.text.flatMap { $0.isEmpty ? nil : Self.asciiLowercased(Array($0.utf8)) }
        var matching: [String] = []
        for id in listed where !Membership.isMembershipRecord(id) {
            let fields = records[id]!
            guard wanted.allSatisfy({ winner(fields, $0.0) == $0.1 }) else { continue }
            let deleted = winner(fields, "deleted") == Array("true".utf8)
            switch query.deleted {
            case .exclude: if deleted { continue }
            case .only: if !deleted { continue }
            case .include: break
            }
            if let needle, !["title", "explanation", "theme"].contains(where: { winner(fields, $0).map { Self.text($0, contains: needle) } == true }) {
                continue
            }
            matching.append(id)
        }
        let page = matching.dropFirst(query.offset).prefix(query.limit)
        return (Array(page), matching.count)
    }

    /// SQLite's `json_extract(value, '$') LIKE '%needle%'`: a string's text (other values as
    /// JSON), ASCII letters compared without case.
    static func text(_ value: [UInt8], contains needle: [UInt8]) -> Bool {
        let text = (try? JSONParser.parse(value).stringValue).flatMap { $0.map { Array($0.utf8) } } ?? value
        let haystack = asciiLowercased(text)
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    static func asciiLowercased(_ bytes: [UInt8]) -> [UInt8] {
        bytes.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 + 32 : $0 }
    }
}

/// Folds logged changes into field frontiers with `MergeRule`, in arrival order: a commit is
/// applied only after what it supersedes, as `MergeRule.merge` expects.
struct AsOfFold {
    /// One field; a record's few fields are searched in a short array, cheaper than hashing.
    /// Its frontier is `MergeRule.frontier` of every folded version and everything they
    /// superseded, so it does not depend on the order the log holds them in (a commit put back
    /// into a log that had lost it comes after those that superseded it). A version outside the
    /// frontier was superseded, and `superseded` only grows, so the frontier's own versions
    /// stand for all folded ones: no list of every version is kept.
    struct Slot: Sendable {
        var field: String
        var frontier: FieldFrontier
        var superseded: [CommitRef]
    }

    var records: [String: [Slot]] = [:]

    /// Folds one stored commit body; `only` keeps one record's changes.
    mutating func add(_ body: [UInt8], only: String? = nil) throws {
        let stored = try Commit.Layout(body)
        let changes = stored.changes
        var start = 0
        // A commit's changes come grouped by record: one lookup per record, not per field.
        while start < changes.count {
            let record = changes[start].record
            var end = start + 1
            while end < changes.count, changes[end].record == record { end += 1 }
            defer { start = end }
            if let only, record != only { continue }
            records[record, default: []].fold(changes[start..<end], stamp: stored.stamp, ref: stored.ref)
        }
    }

    /// Winners sorted by field, then losers by field and commit, as the stored tables give them.
    static func rows(_ fields: [Slot]) -> [StoredFieldRow] {
        var winners: [StoredFieldRow] = []
        var losers: [StoredFieldRow] = []
        winners.reserveCapacity(fields.count)
        for slot in fields {
            let field = slot.field
            func row(_ v: FieldVersion, loser: Bool) -> StoredFieldRow {
                StoredFieldRow(field: field, value: v.value, stamp: v.stamp, origin: v.origin.rawValue, seq: v.seq, author: nil, isLoser: loser)
            }
            winners.append(row(slot.frontier.winner, loser: false))
            losers += slot.frontier.losers.map { row($0, loser: true) }
        }
        winners.sort { $0.field.utf8.lexicographicallyPrecedes($1.field.utf8) }
        losers.sort { a, b in
            a.field != b.field ? a.field.utf8.lexicographicallyPrecedes(b.field.utf8)
                : a.origin != b.origin ? a.origin.utf8.lexicographicallyPrecedes(b.origin.utf8) : a.seq < b.seq
        }
        return winners + losers
    }
}

extension [AsOfFold.Slot] {
    /// Merges one commit's changes of a record into its fields, in place.
    mutating func fold(_ changes: ArraySlice<Commit.StoredChange>, stamp: Stamp, ref: CommitRef) {
        if isEmpty { reserveCapacity(Swift.max(changes.count, 4)) }
        for change in changes {
            let version = FieldVersion(value: change.valueBytes, stamp: stamp, origin: ref.origin, seq: ref.seq)
            guard let i = firstIndex(where: { $0.field == change.field }) else {
                let frontier = MergeRule.frontier(of: [version], superseded: Set(change.supersedes)) ?? FieldFrontier(winner: version)
                append(AsOfFold.Slot(field: change.field, frontier: frontier, superseded: change.supersedes))
                continue
            }
            self[i].superseded += change.supersedes
            if let frontier = MergeRule.frontier(of: self[i].frontier.versions + [version], superseded: Set(self[i].superseded)) {
                self[i].frontier = frontier
            }
        }
    }
}

extension Replica {
    /// Every record as of `cut`, from one pass over the log in arrival order.
    public func recordsAsOf(_ cut: Stamp) throws -> RecordsAsOf {
        try pool.read { db in
            var fold = AsOfFold()
            // `+stamp`: walk the log in lsn order rather than sort it by the stamp index.
            let statement = try db.makeStatement(sql: "SELECT body FROM commits WHERE status = 0 AND +stamp <= ? ORDER BY lsn")
            try statement.setArguments([Int64(bitPattern: cut.rawValue)])
            let s = statement.sqliteStatement
            defer { sqlite3_reset(s) }
            while true {
                let rc = sqlite3_step(s)
                if rc == SQLITE_DONE { break }
                guard rc == SQLITE_ROW else {
                    throw ReplicaError(.corrupt, "reading the log: \(String(cString: sqlite3_errmsg(sqlite3_db_handle(s))))")
                }
                let count = Int(sqlite3_column_bytes(s, 0))
                let body = count == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: sqlite3_column_blob(s, 0), count: count))
                try fold.add(body)
            }
            let lastLSN = try Int64.fetchOne(db, sql: "SELECT max(lsn) FROM commits") ?? 0
            let listed = fold.records.compactMap { record in record.value.contains { $0.field == "kind" } ? record.key : nil }
                .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            return RecordsAsOf(cut: cut, lastLSN: lastLSN, records: fold.records, listed: listed)
        }
    }

    /// One record as of `cut`, as `storedRows(ofRecord:)` gives it now: read through the
    /// record's own commits only.
    public func storedRows(ofRecord record: String, asOf cut: Stamp) throws -> [StoredFieldRow] {
        try pool.read { db in
            var fold = AsOfFold()
            let bodies = try Data.fetchCursor(db.cachedStatement(sql: """
                SELECT c.body FROM record_commits r JOIN commits c ON c.lsn = r.lsn
                WHERE r.record = ? AND c.status = 0 AND c.stamp <= ? ORDER BY c.lsn
                """), arguments: [record, Int64(bitPattern: cut.rawValue)])
            while let body = try bodies.next() { try fold.add([UInt8](body), only: record) }
            guard let fields = fold.records[record] else { return [] }
            var rows = AsOfFold.rows(fields)
            let author = try db.cachedStatement(sql: RecordReader.authorSQL)
            try RecordReader.fillAuthors(&rows) { origin, seq in try String.fetchOne(author, arguments: [origin, Int64(bitPattern: seq)]) }
            return rows
        }
    }
}
