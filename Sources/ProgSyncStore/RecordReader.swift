import Foundation
import GRDB
import GRDBSQLite
import ProgSyncCore
import Synchronization

/// One stored version of a record's field, as bytes: the winner (with its commit's author) or a
/// conflict loser. The value is the canonical JSON the replica holds, so it can be copied into an
/// answer without parsing.
public struct StoredFieldRow: Sendable, Hashable {
    public var field: String
    public var value: [UInt8]
    public var stamp: Stamp
    public var origin: String
    public var seq: UInt64
    public var author: String?
    public var isLoser: Bool
}

/// Point reads of one record on plain SQLite connections. A GRDB pool read costs a queue hop, a
/// lock and a BEGIN/COMMIT; reading a record is the local API's hottest path (a GET and every
/// write's answer).
///
/// A connection keeps its read transaction (snapshot) open from one read to the next until the
/// writer commits: starting a transaction per read costs file locks and a WAL-index check each
/// time. After every commit, and before the writer acknowledges it, the idle connections end
/// their snapshots and busy ones end theirs when their read is done, so a read that starts after
/// a write was acknowledged always sees it, and no old snapshot holds the WAL back.
final class RecordReader: Sendable {
    /// One connection with its prepared statement; used by one thread at a time.
    final class Connection: @unchecked Sendable {
        let db: OpaquePointer
        let statement: OpaquePointer
        let authorStatement: OpaquePointer
        let begin: OpaquePointer
        let commit: OpaquePointer
        /// The writer's commit generation the open read transaction began in; nil when none is open.
        private(set) var snapshot: UInt64?

        init(path: String) throws {
            var handle: OpaquePointer?
            let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX
            guard sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
                let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
                sqlite3_close_v2(handle)
                throw ReplicaError(.corrupt, "cannot open \(path) for reading: \(message)")
            }
            sqlite3_busy_timeout(handle, 10_000)
            // A reader never writes; a small page cache keeps an idle daemon small.
            sqlite3_exec(handle, "PRAGMA query_only = 1; PRAGMA cache_size = -1024", nil, nil, nil)
            var prepared: [OpaquePointer] = []
            for sql in [RecordReader.rowsSQL, RecordReader.authorSQL, "BEGIN", "COMMIT"] {
                var statement: OpaquePointer?
                guard sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK,
                      let statement
                else {
                    let message = String(cString: sqlite3_errmsg(handle))
                    prepared.forEach { sqlite3_finalize($0) }
                    sqlite3_close_v2(handle)
                    throw ReplicaError(.corrupt, "cannot prepare the record read: \(message)")
                }
                prepared.append(statement)
            }
            db = handle
            statement = prepared[0]
            authorStatement = prepared[1]
            begin = prepared[2]
            commit = prepared[3]
        }

        /// Reads in a snapshot of `generation` or later, beginning one if needed.
        func ensureSnapshot(_ generation: UInt64) throws {
            if snapshot == generation { return }
            endSnapshot()
            let rc = sqlite3_step(begin)
            sqlite3_reset(begin)
            guard rc == SQLITE_DONE else { throw ReplicaError(.corrupt, "beginning a read: \(String(cString: sqlite3_errmsg(db)))") }
            snapshot = generation
        }

        func endSnapshot() {
            guard snapshot != nil else { return }
            sqlite3_step(commit)
            sqlite3_reset(commit)
            snapshot = nil
        }

        /// Authors by commit: a commit never changes its author, so entries never go stale.
        private var authors: [CommitKey: String] = [:]
        private static let authorCacheLimit = 16_384

        struct CommitKey: Hashable {
            var origin: String
            var seq: UInt64
        }

        func rows(of record: String) throws -> [StoredFieldRow] {
            // A record's fields mostly come from one node: its id is made into a String once.
            var origin = ""
            var out = try step(statement, binding: { bindText(statement, 1, record) }) { s in
                if !equals(s, 4, origin) { origin = text(s, 4) }
                return StoredFieldRow(
                    field: text(s, 1), value: bytes(s, 2),
                    stamp: Stamp(rawValue: UInt64(bitPattern: sqlite3_column_int64(s, 3))),
                    origin: origin, seq: UInt64(bitPattern: sqlite3_column_int64(s, 5)),
                    author: nil, isLoser: sqlite3_column_int(s, 0) != 0)
            }
            try RecordReader.fillAuthors(&out) { origin, seq in
                let key = CommitKey(origin: origin, seq: seq)
                if let known = authors[key] { return known }
                let author = try step(authorStatement, binding: {
                    bindText(authorStatement, 1, origin)
                    sqlite3_bind_int64(authorStatement, 2, Int64(bitPattern: seq))
                }) { s in text(s, 0) }.first
                if let author {
                    if authors.count >= Self.authorCacheLimit { authors.removeAll(keepingCapacity: true) }
                    authors[key] = author
                }
                return author
            }
            return out
        }

        private func equals(_ s: OpaquePointer, _ column: Int32, _ string: String) -> Bool {
            let count = Int(sqlite3_column_bytes(s, column))
            guard count == string.utf8.count, let base = sqlite3_column_text(s, column) else { return false }
            var string = string
            return string.withUTF8 { memcmp($0.baseAddress!, base, count) == 0 }
        }

        private func bindText(_ s: OpaquePointer, _ index: Int32, _ text: String) {
            var text = text
            _ = text.withUTF8 { sqlite3_bind_text(s, index, $0.baseAddress, Int32($0.count), Statement.transient) }
        }

        private func step<T>(_ s: OpaquePointer, binding bind: () -> Void, _ row: (OpaquePointer) -> T) throws -> [T] {
            defer {
                sqlite3_reset(s)
                sqlite3_clear_bindings(s)
            }
            bind()
            var out: [T] = []
            out.reserveCapacity(16)
            while true {
                let rc = sqlite3_step(s)
                if rc == SQLITE_DONE { return out }
                guard rc == SQLITE_ROW else { throw ReplicaError(.corrupt, "reading a record: \(String(cString: sqlite3_errmsg(db)))") }
                out.append(row(s))
            }
        }

        private func bytes(_ s: OpaquePointer, _ column: Int32) -> [UInt8] {
            let count = Int(sqlite3_column_bytes(s, column))
            guard count > 0, let base = sqlite3_column_text(s, column) else { return [] }
            return Array(UnsafeBufferPointer(start: base, count: count))
        }

        private func text(_ s: OpaquePointer, _ column: Int32) -> String {
            let count = Int(sqlite3_column_bytes(s, column))
            guard count > 0, let base = sqlite3_column_text(s, column) else { return "" }
            return String(decoding: UnsafeBufferPointer(start: base, count: count), as: UTF8.self)
        }

        deinit {
            endSnapshot()
            for s in [statement, authorStatement, begin, commit] { sqlite3_finalize(s) }
            sqlite3_close_v2(db)
        }
    }

    // Winners and losers in one SELECT, so they come from one snapshot. A commit's author never
    // changes, so it is looked up apart, once per commit rather than per field.
    static let rowsSQL = """
        SELECT 0, field, value, stamp, origin, seq FROM fields WHERE record = ?1
        UNION ALL
        SELECT 1, field, value, stamp, origin, seq FROM conflicts WHERE record = ?1
        """
    /// A commit's author as this node shows it: the name behind one of its own pseudonyms, else
    /// the author the commit carries. Keyed by origin, so a partner cannot borrow our pseudonyms.
    static let authorSQL = """
        SELECT coalesce(l.name, c.author) FROM commits c
        LEFT JOIN local_authors l ON l.origin = c.origin AND l.pseudonym = c.author
        WHERE c.origin = ?1 AND c.seq = ?2
        """

    /// Sets each winner's author; a record's fields mostly come from one or two commits.
    static func fillAuthors(_ rows: inout [StoredFieldRow], lookup: (String, UInt64) throws -> String?) rethrows {
        var known: [(origin: String, seq: UInt64, author: String?)] = []
        for i in rows.indices where !rows[i].isLoser {
            let (origin, seq) = (rows[i].origin, rows[i].seq)
            if let hit = known.first(where: { $0.seq == seq && $0.origin == origin }) {
                rows[i].author = hit.author
                continue
            }
            rows[i].author = try lookup(origin, seq)
            known.append((origin, seq, rows[i].author))
        }
    }

    let path: String
    /// Idle connections; a thread takes one, so there are never more than concurrent readers.
    /// `generation` counts the writer's commits.
    private let pool = Mutex<(idle: [Connection], closed: Bool, generation: UInt64)>(([], false, 0))
    private static let keepIdle = 4

    init(path: String) { self.path = path }

    func rows(of record: String) throws -> [StoredFieldRow] {
        let (taken, generation) = try pool.withLock { p -> (Connection?, UInt64) in
            guard !p.closed else { throw ReplicaError(.corrupt, "the replica is closed") }
            return (p.idle.popLast(), p.generation)
        }
        let connection = try taken ?? Connection(path: path)
        defer {
            pool.withLock { p in
                // A commit landed while this read ran: its snapshot is old now.
                if connection.snapshot != p.generation { connection.endSnapshot() }
                if !p.closed, p.idle.count < Self.keepIdle { p.idle.append(connection) }
            }
        }
        do {
            try connection.ensureSnapshot(generation)
            return try connection.rows(of: record)
        } catch {
            connection.endSnapshot()
            throw error
        }
    }

    /// Called on the writer after every commit, before the commit is acknowledged.
    func writerCommitted() {
        pool.withLock { p in
            p.generation &+= 1
            for connection in p.idle { connection.endSnapshot() }
        }
    }

    /// Drops the idle connections and their page caches; the next read opens a fresh one.
    func trim() {
        _ = pool.withLock { p in p.idle.removeAll() }
    }

    /// Closes for good: idle connections now, busy ones when their read ends.
    func close() {
        pool.withLock { p in
            p.closed = true
            p.idle.removeAll()
        }
    }
}

extension Replica {
    /// Every stored version of one record's fields, winners sorted by field name first, then
    /// losers; empty when the record does not exist.
    public func storedRows(ofRecord record: String) throws -> [StoredFieldRow] {
        var rows: [StoredFieldRow]
        if let recordReader {
            rows = try recordReader.rows(of: record)
        } else {
            rows = try pool.read { db in
                var rows = try Row.fetchAll(db.cachedStatement(sql: RecordReader.rowsSQL), arguments: [record]).map { row in
                    StoredFieldRow(
                        field: row[1], value: Array((row[2] as String).utf8), stamp: Stamp(rawValue: UInt64(bitPattern: row[3])),
                        origin: row[4], seq: UInt64(bitPattern: row[5]), author: nil, isLoser: (row[0] as Int) != 0)
                }
                let author = try db.cachedStatement(sql: RecordReader.authorSQL)
                try RecordReader.fillAuthors(&rows) { origin, seq in try String.fetchOne(author, arguments: [origin, Int64(bitPattern: seq)]) }
                return rows
            }
        }
        rows.sort { a, b in
            a.isLoser != b.isLoser ? !a.isLoser : a.field.utf8.lexicographicallyPrecedes(b.field.utf8)
        }
        return rows
    }
}
