import Crypto
import Foundation
import GRDB
import GRDBSQLite
import ProgSyncCore

/// One winning entry of the digest, as two replicas compare them when narrowing a difference.
public struct DigestEntry: Sendable, Hashable {
    public var record: String
    public var field: String
    public var stamp: Stamp
    public var origin: String
    public var seq: UInt64
    public var hash: [UInt8]
    public var isLoser: Bool

    public init(record: String, field: String, stamp: Stamp, origin: String, seq: UInt64, hash: [UInt8], isLoser: Bool = false) {
        self.record = record
        self.field = field
        self.stamp = stamp
        self.origin = origin
        self.seq = seq
        self.hash = hash
        self.isLoser = isLoser
    }

    /// `record~field` for a winner; a loser adds its commit, since a field may have several.
    public var key: String { isLoser ? "\(record)~\(field)#\(origin)/\(seq)" : record + "~" + field }
}

/// What the self-check found: seqs the heads claim but the log lacks, and buckets whose winners
/// no longer add up to the maintained digest (a row changed behind the daemon's back).
public struct IntegrityReport: Sendable {
    public var fieldsChecked = 0
    public var missingCommits: [NodeID: [ClosedRange<UInt64>]] = [:]
    public var divergedBuckets: [Int] = []
    /// Per diverged bucket, the rows' sum minus the maintained one: what a repair must undo.
    public var divergence: [Int: BucketSum] = [:]
    /// The records of diverged buckets whose rows changed since the self-check last found their
    /// bucket sound: where a repair starts. Only a hint; the maintained digest stays the judge.
    public var suspects: Set<String> = []
    public var missingCommitCount: Int { missingCommits.values.joined().reduce(0) { $0 + $1.count } }
    public var isClean: Bool { missingCommits.isEmpty && divergedBuckets.isEmpty }
}

/// What rebuilding records from the commit log changed.
public struct RebuildReport: Sendable {
    public var records = 0
    public var commitsRead = 0
    public var fieldsRepaired = 0
    public var conflictsRepaired = 0
    /// Rows inserted, updated or deleted: a sound row is never rewritten.
    public var rowsWritten = 0
    /// Buckets whose every record was rebuilt, because the named records did not explain them.
    public var bucketsRebuiltWhole = 0
    /// Buckets whose rows, after the repair, still do not add up to what the log gives.
    public var bucketsStillDiffering = 0
    /// `record~field` of the first repaired fields, for the report.
    public var examples: [String] = []
    /// Milliseconds spent finding the records, reading the log, and comparing and writing.
    public var phases: [(String, Double)] = []
}

/// Entries packed back to back, with where each ends, its bucket, and which record of the scan
/// it belongs to (-1: none), so one pass sums both buckets and records.
struct EntryBatch: Sendable {
    var bytes: [UInt8] = []
    var ends: [Int] = []
    var buckets: [UInt16] = []
    var records: [Int32] = []
    init() {
        bytes.reserveCapacity(8192 * 160)
        ends.reserveCapacity(8192)
        buckets.reserveCapacity(8192)
        records.reserveCapacity(8192)
    }
}

struct FieldKey: Hashable {
    var record: String
    var field: String
}

/// Hashes batches on its own serial queue and keeps the per-bucket and per-record sums there.
final class BucketHasher: @unchecked Sendable {
    private let queue = DispatchQueue(label: "progsync.digest")
    private let group = DispatchGroup()
    private var sums = [BucketSum](repeating: .zero, count: ReplicaDigest.bucketCount)
    private var recordSums: [BucketSum] = []

    func add(_ batch: EntryBatch) {
        guard !batch.ends.isEmpty else { return }
        queue.async(group: group) {
            batch.bytes.withUnsafeBytes { raw in
                var start = 0
                for (i, end) in batch.ends.enumerated() {
                    let h = BucketSum.hashing(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                    let b = Int(batch.buckets[i])
                    self.sums[b] = self.sums[b] + h
                    let r = Int(batch.records[i])
                    if r >= 0 {
                        while self.recordSums.count <= r { self.recordSums.append(.zero) }
                        self.recordSums[r] = self.recordSums[r] + h
                    }
                    start = end
                }
            }
        }
    }

    func finish() -> (buckets: [BucketSum], records: [BucketSum]) {
        group.wait()
        return queue.sync { (sums, recordSums) }
    }
}

/// The records met while summing, as one byte buffer (a String each would cost the nightly pass
/// an allocation per record). The first `sorted` come from the fields table in key order; any
/// after them hold conflict rows only.
struct RecordTally {
    var bytes: [UInt8] = []
    var ends: [Int] = []
    var buckets: [Int] = []
    var sorted = 0
    var sums: [BucketSum] = []

    var count: Int { ends.count }

    func withName<T>(_ i: Int, _ body: (UnsafeRawBufferPointer) -> T) -> T {
        bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[(i == 0 ? 0 : ends[i - 1])..<ends[i]])) }
    }

    func name(_ i: Int) -> String { withName(i) { String(decoding: $0, as: UTF8.self) } }

    func sum(_ i: Int) -> BucketSum { i < sums.count ? sums[i] : .zero }

    mutating func append(_ record: UnsafeRawBufferPointer, bucket: Int) -> Int32 {
        bytes.append(contentsOf: record)
        ends.append(bytes.count)
        buckets.append(bucket)
        return Int32(ends.count - 1)
    }

    func isLast(_ record: UnsafeRawBufferPointer) -> Bool {
        !ends.isEmpty && withName(ends.count - 1) { RecordTally.compare($0, record) == 0 }
    }

    /// The record among the sorted ones, by binary search.
    func find(_ record: UnsafeRawBufferPointer) -> Int? {
        var low = 0, high = sorted
        while low < high {
            let mid = (low + high) / 2
            let c = withName(mid) { RecordTally.compare($0, record) }
            if c == 0 { return mid }
            if c < 0 { low = mid + 1 } else { high = mid }
        }
        return nil
    }

    /// SQLite's BINARY order: bytes, then length.
    static func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        let n = min(a.count, b.count)
        if n > 0 {
            let c = memcmp(a.baseAddress!, b.baseAddress!, n)
            if c != 0 { return Int(c) }
        }
        return a.count - b.count
    }
}

/// A row of a raw SQLite step: the column buffers hold until the next step.
struct RawRow {
    let statement: SQLiteStatement

    func text(_ i: Int32) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: sqlite3_column_text(statement, i), count: Int(sqlite3_column_bytes(statement, i)))
    }

    func blob(_ i: Int32) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: sqlite3_column_blob(statement, i), count: Int(sqlite3_column_bytes(statement, i)))
    }

    func int64(_ i: Int32) -> Int64 { sqlite3_column_int64(statement, i) }

    /// Steps `statement` (arguments bound) straight off SQLite's row buffers, then resets it.
    static func each(_ statement: Statement, reading what: String, _ body: (RawRow) throws -> Void) throws {
        let s = statement.sqliteStatement
        defer { sqlite3_reset(s) }
        while true {
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else {
                throw ReplicaError(.corrupt, "reading \(what): \(String(cString: sqlite3_errmsg(sqlite3_db_handle(s))))")
            }
            try body(RawRow(statement: s))
        }
    }
}

extension Replica {
    // MARK: Version vectors of peers

    /// The last version vector a peer told us (hello, push answer, bundle), and when.
    public func knownVector(of peer: NodeID) throws -> (vector: [NodeID: UInt64], at: UInt64)? {
        try pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT vector, at FROM peer_vectors WHERE peer = ?", arguments: [peer.rawValue])
            else { return nil }
            let json = try JSONParser.parse(Array((row[0] as String).utf8), maxDepth: 4)
            var vector: [NodeID: UInt64] = [:]
            for (k, v) in json.objectValue ?? [:] {
                if let id = NodeID(k), let seq = v.intValue, seq >= 0 { vector[id] = UInt64(seq) }
            }
            return (vector, UInt64(row[1] as Int64))
        }
    }

    /// Records what a peer holds. `merging` keeps the greater seq per origin (a bundle tells only
    /// what the exporter had, and an older bundle must not make us forget newer knowledge).
    public func setKnownVector(of peer: NodeID, _ vector: [NodeID: UInt64], merging: Bool = false) throws {
        var stored = vector
        if merging, let old = try knownVector(of: peer)?.vector {
            stored.merge(old) { max($0, $1) }
        }
        let json = JSONValue.object(Dictionary(uniqueKeysWithValues: stored.map { ($0.key.rawValue, JSONValue.int(Int64($0.value))) }))
        try pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO peer_vectors (peer, vector, at) VALUES (?, ?, ?)",
                           arguments: [peer.rawValue, json.canonicalString, Int64(configuration.now())])
        }
    }

    /// How many commits we hold that a holder of `vector` lacks.
    public func missingCount(from vector: [NodeID: UInt64]) -> Int {
        versionVector.reduce(0) { $0 + Int($1.value - min($1.value, vector[$1.key] ?? 0)) }
    }

    /// The commits a holder of `vector` lacks, in our arrival order (which is causal order).
    public func rawCommits(missingFrom vector: [NodeID: UInt64]) throws -> [RawCommit] {
        try pool.read { db in
            var out: [RawCommit] = []
            let statement = try db.makeStatement(sql: "SELECT lsn, origin, seq, body, sig FROM commits WHERE origin = ? AND seq > ?")
            for (origin, head) in heads where head.seq > (vector[origin] ?? 0) {
                let rows = try Row.fetchCursor(statement, arguments: [origin.rawValue, Int64(vector[origin] ?? 0)])
                while let row = try rows.next() {
                    out.append(RawCommit(lsn: row[0], origin: row[1], seq: UInt64(row[2] as Int64),
                                         body: [UInt8](row[3] as Data), signature: [UInt8](row[4] as Data)))
                }
            }
            return out.sorted { $0.lsn < $1.lsn }
        }
    }

    /// Every commit stamped at or after `stamp` (nil: all), in arrival order.
    public func rawCommits(stampedSince stamp: Stamp?) throws -> [RawCommit] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT lsn, origin, seq, body, sig FROM commits WHERE stamp >= ? ORDER BY lsn",
                arguments: [Int64(bitPattern: stamp?.rawValue ?? 0)]
            ).map { row in
                RawCommit(lsn: row[0], origin: row[1], seq: UInt64(row[2] as Int64), body: [UInt8](row[3] as Data), signature: [UInt8](row[4] as Data))
            }
        }
    }

    /// One origin's commits in a seq range, for a peer filling a gap.
    public func rawCommits(origin: NodeID, seqs: ClosedRange<UInt64>) throws -> [RawCommit] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT lsn, origin, seq, body, sig FROM commits WHERE origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                arguments: [origin.rawValue, Int64(seqs.lowerBound), Int64(seqs.upperBound)]
            ).map { row in
                RawCommit(lsn: row[0], origin: row[1], seq: UInt64(row[2] as Int64), body: [UInt8](row[3] as Data), signature: [UInt8](row[4] as Data))
            }
        }
    }

    // MARK: Self-check

    /// Checks the replica against itself in one snapshot: the log holds every commit the heads
    /// claim, and the winners add up to the maintained digest. Each record's sum is compared
    /// with the one kept when its bucket was last found sound (`record_sums`): in a diverged
    /// bucket the records that changed are the suspects; in a sound one the kept sums follow.
    public func checkIntegrity() throws -> IntegrityReport {
        let (report, verified) = try pool.read { db -> (IntegrityReport, (upserts: [(String, BucketSum)], deletes: [String])) in
            var report = IntegrityReport()
            for row in try Row.fetchAll(db, sql: "SELECT origin, seq FROM heads") {
                guard let origin = NodeID(row[0] as String) else { continue }
                let head = UInt64(row[1] as Int64)
                let count = try Int64.fetchOne(db, sql: "SELECT count(*) FROM commits WHERE origin = ? AND seq <= ?",
                                               arguments: [origin.rawValue, Int64(head)]) ?? 0
                guard UInt64(count) < head else { continue }
                var ranges: [ClosedRange<UInt64>] = []
                var expected: UInt64 = 1
                let seqs = try Int64.fetchCursor(db, sql: "SELECT seq FROM commits WHERE origin = ? AND seq <= ? ORDER BY seq",
                                                 arguments: [origin.rawValue, Int64(head)])
                while let s = try seqs.next() {
                    let seq = UInt64(s)
                    if seq > expected { ranges.append(expected...(seq - 1)) }
                    expected = seq + 1
                }
                if expected <= head { ranges.append(expected...head) }
                report.missingCommits[origin] = ranges
            }
            var maintained = [BucketSum](repeating: .zero, count: ReplicaDigest.bucketCount)
            for row in try Row.fetchAll(db, sql: "SELECT bucket, sum FROM digest_buckets") {
                let i: Int = row[0]
                if (0..<ReplicaDigest.bucketCount).contains(i) { maintained[i] = BucketSum(bytes: [UInt8](row[1] as Data)) }
            }
            var tally: RecordTally? = RecordTally()
            let (actual, count) = try Self.sumBuckets(db, tally: &tally)
            report.fieldsChecked = count
            report.divergedBuckets = (0..<ReplicaDigest.bucketCount).filter { actual[$0] != maintained[$0] }
            for b in report.divergedBuckets { report.divergence[b] = actual[b] - maintained[b] }
            let verified = try tally.map { try Self.compareWithVerified(db, $0, report: &report) } ?? ([], [])
            return (report, verified)
        }
        if !verified.upserts.isEmpty || !verified.deletes.isEmpty {
            try pool.write { db in
                let upsert = try db.cachedStatement(sql: "INSERT OR REPLACE INTO record_sums (record, sum) VALUES (?, ?)")
                for (record, sum) in verified.upserts { try upsert.execute(arguments: [record, Data(sum.bytes)]) }
                let delete = try db.cachedStatement(sql: "DELETE FROM record_sums WHERE record = ?")
                for record in verified.deletes { try delete.execute(arguments: [record]) }
            }
        }
        return report
    }

    /// One merge pass of the records just summed against the kept sums, both in key order.
    static func compareWithVerified(
        _ db: Database, _ tally: RecordTally, report: inout IntegrityReport
    ) throws -> (upserts: [(String, BucketSum)], deletes: [String]) {
        let diverged = Set(report.divergedBuckets)
        var upserts: [(String, BucketSum)] = []
        var deletes: [String] = []
        func differs(_ i: Int) {
            if diverged.contains(tally.buckets[i]) {
                report.suspects.insert(tally.name(i))
            } else {
                upserts.append((tally.name(i), tally.sum(i)))
            }
        }
        var i = 0
        try RawRow.each(try db.makeStatement(sql: "SELECT record, sum FROM record_sums ORDER BY record"), reading: "record_sums") { row in
            let record = row.text(0)
            let blob = row.blob(1)
            let kept = blob.count == 32 ? BucketSum(bytes: Array(blob)) : nil
            while i < tally.sorted, tally.withName(i, { RecordTally.compare($0, record) }) < 0 {
                differs(i)  // no kept sum yet
                i += 1
            }
            if i < tally.sorted, tally.withName(i, { RecordTally.compare($0, record) }) == 0 {
                if kept != tally.sum(i) { differs(i) }
                i += 1
                return
            }
            // A kept record without rows now: deleted behind our back, or never had a winner.
            let name = String(decoding: record, as: UTF8.self)
            if diverged.contains(ReplicaDigest.bucket(ofRecordBytes: record.assumingMemoryBound(to: UInt8.self))) {
                report.suspects.insert(name)
            } else {
                deletes.append(name)
            }
        }
        while i < tally.sorted {
            differs(i)
            i += 1
        }
        // Conflict rows without a winner row are never sound.
        for j in tally.sorted..<tally.count where diverged.contains(tally.buckets[j]) { report.suspects.insert(tally.name(j)) }
        return (upserts, deletes)
    }

    /// Recomputes every bucket from the winners table: what the digest should be.
    public func recomputeDigestBuckets() throws -> [BucketSum] {
        try pool.read { db in try Self.sumBuckets(db).buckets }
    }

    static func sumBuckets(_ db: Database) throws -> (buckets: [BucketSum], fields: Int) {
        var tally: RecordTally? = nil
        return try sumBuckets(db, tally: &tally)
    }

    /// Sums the entry hashes of winners and losers per bucket (and per record, given a tally)
    /// straight off SQLite's row buffers: this runs over every field each night. This thread
    /// steps SQLite and packs entries into batches; a second one hashes them, so the two cores
    /// share the work.
    static func sumBuckets(_ db: Database, tally: inout RecordTally?) throws -> (buckets: [BucketSum], fields: Int) {
        let hasher = BucketHasher()
        let fields = try sumEntries(db, table: "fields", into: hasher, tally: &tally)
        if let count = tally?.count { tally?.sorted = count }
        _ = try sumEntries(db, table: "conflicts", into: hasher, tally: &tally)
        let (buckets, records) = hasher.finish()
        tally?.sums = records
        return (buckets, fields)
    }

    static func sumEntries(_ db: Database, table: String, into hasher: BucketHasher, tally: inout RecordTally?) throws -> Int {
        let loser = table == "conflicts"
        // Key order: a record's rows come together, so each is tallied by one comparison.
        let statement = try db.makeStatement(sql: "SELECT record, field, stamp, origin, value FROM \(table) ORDER BY record")
        var batch = EntryBatch()
        var count = 0
        var current: Int32 = -1
        try RawRow.each(statement, reading: table) { row in
            let record = row.text(0)
            let bucket = ReplicaDigest.bucket(ofRecordBytes: record.assumingMemoryBound(to: UInt8.self))
            batch.buckets.append(UInt16(bucket))
            if tally != nil {
                if current < 0 || !tally!.withName(Int(current), { RecordTally.compare($0, record) == 0 }) {
                    if !loser {
                        current = tally!.append(record, bucket: bucket)
                    } else if let known = tally!.find(record) {
                        current = Int32(known)
                    } else {
                        current = tally!.append(record, bucket: bucket)
                    }
                }
            }
            batch.records.append(current)
            ReplicaDigest.appendEntry(to: &batch.bytes, record: record, field: row.text(1), stamp: UInt64(bitPattern: row.int64(2)),
                                      origin: row.text(3), value: row.text(4), loser: loser)
            batch.ends.append(batch.bytes.count)
            count += 1
            if batch.ends.count == 8192 {
                hasher.add(batch)
                batch = EntryBatch()
            }
        }
        hasher.add(batch)
        return count
    }

    /// The winners and conflict losers in the given buckets, for a peer narrowing a difference.
    /// A partner asks for this, so the cost stays near the answer: one pass over record ids
    /// (keys only, no values read or hashed), then only the records in those buckets.
    public func digestEntries(buckets: Set<Int>) throws -> [DigestEntry] {
        try pool.read { db in
            var records: [String] = []
            let ids = try String.fetchCursor(db, sql: "SELECT DISTINCT record FROM fields")
            while let id = try ids.next() {
                if buckets.contains(ReplicaDigest.bucket(ofRecord: id)) { records.append(id) }
            }
            var out: [DigestEntry] = []
            for table in ["fields", "conflicts"] {
                let statement = try db.cachedStatement(sql: "SELECT record, field, value, stamp, origin, seq FROM \(table) WHERE record = ?")
                for id in records {
                    let rows = try Row.fetchCursor(statement, arguments: [id])
                    while let row = try rows.next() {
                        let record: String = row[0]
                        let field: String = row[1]
                        let version = try Self.version(value: row[2], stamp: row[3], origin: row[4], seq: row[5])
                        let hash = table == "fields"
                            ? ReplicaDigest.entryHash(record: record, field: field, version: version)
                            : ReplicaDigest.loserHash(record: record, field: field, version: version)
                        out.append(DigestEntry(record: record, field: field, stamp: version.stamp, origin: version.origin.rawValue,
                                               seq: version.seq, hash: hash.bytes, isLoser: table == "conflicts"))
                    }
                }
            }
            return out
        }
    }

    // MARK: Repair

    /// Rebuilds `records` from the commit log, which is signed and hash-chained, reading only
    /// their commits (`record_commits` is keyed by record) and writing only the rows that differ.
    /// Then per bucket:
    /// - a bucket in `divergence` (its rows' sum minus the maintained one, from the self-check)
    ///   is settled when the rows written undo exactly that difference; otherwise the records did
    ///   not explain it, and the bucket is rebuilt whole;
    /// - every bucket in `buckets` is rebuilt whole, and its digest sum set from the log;
    /// - any other bucket's sum follows the rows written (the tables now match the log).
    /// A field's frontier is `MergeRule.frontier` of its versions, as incremental merging gives.
    public func rebuild(buckets: Set<Int> = [], records: Set<String> = [], divergence: [Int: BucketSum] = [:]) throws -> RebuildReport {
        try write { ctx in try ctx.rebuild(buckets: buckets, records: records, divergence: divergence) }
    }

    /// Every record with a row or a commit in `buckets`: one pass over record ids (keys only).
    static func recordIDs(inBuckets buckets: Set<Int>, _ db: Database) throws -> Set<String> {
        var out = Set<String>()
        for table in ["record_commits", "fields", "conflicts"] {
            let ids = try String.fetchCursor(db, sql: "SELECT DISTINCT record FROM \(table)")
            while let id = try ids.next() {
                if buckets.contains(ReplicaDigest.bucket(ofRecord: id)) { out.insert(id) }
            }
        }
        return out
    }
}

/// One rebuild's work on a set of records: the truth from their commits, the rows they hold,
/// what was written, and per bucket the sums the digest is settled with.
struct RecordRebuild {
    let db: Database
    var report = RebuildReport()
    var done = Set<String>()
    /// Per bucket, over the records rebuilt: rows before, rows written (after − before), and
    /// the entries the log gives.
    var before: [Int: BucketSum] = [:]
    var delta: [Int: BucketSum] = [:]
    var truth: [Int: BucketSum] = [:]
    private var scratch: [UInt8] = []
    private let clock = ContinuousClock()
    private var mark: ContinuousClock.Instant

    init(db: Database) {
        self.db = db
        mark = ContinuousClock.now
    }

    mutating func phase(_ name: String) {
        let d = clock.now - mark
        let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        if let i = report.phases.firstIndex(where: { $0.0 == name }) { report.phases[i].1 += ms } else { report.phases.append((name, ms)) }
        mark = clock.now
    }

    /// Every version of a field the log holds, and every version some change superseded. Most
    /// fields have one version, kept inline.
    struct Versions {
        var first: FieldVersion
        var more: [FieldVersion] = []
        var superseded: [CommitRef] = []
        var frontier: FieldFrontier? { MergeRule.frontier(of: more.isEmpty ? [first] : [first] + more, superseded: Set(superseded)) }
    }

    /// A row as stored: its version when it reads as one, its key columns, and its entry hash
    /// from the raw bytes, exactly as the self-check summed it.
    struct StoredRow {
        var version: FieldVersion?
        var origin: String
        var seq: Int64
        var hash: BucketSum
    }

    struct Stored {
        var winner: StoredRow?
        var losers: [StoredRow] = []
    }

    mutating func rebuild(_ wanted: Set<String>) throws {
        let records = wanted.subtracting(done)
        guard !records.isEmpty else { return }
        done.formUnion(records)
        report.records += records.count

        // 1. The commits that touched them.
        var lsns = Set<Int64>()
        let find = try db.cachedStatement(sql: "SELECT lsn FROM record_commits WHERE record = ?")
        for record in records { lsns.formUnion(try Int64.fetchAll(find, arguments: [record])) }
        phase("find")

        // 2. Their versions, decoded on every core.
        var bodies: [[UInt8]] = []
        let read = try db.cachedStatement(sql: "SELECT body FROM commits WHERE lsn = ? AND status = 0")
        for lsn in lsns.sorted() {
            if let body = try Data.fetchOne(read, arguments: [lsn]) { bodies.append([UInt8](body)) }
        }
        report.commitsRead += bodies.count
        var versions: [FieldKey: Versions] = [:]
        for part in try Self.changes(in: bodies, of: records) {
            for (key, version, supersedes) in part {
                if versions[key] == nil {
                    versions[key] = Versions(first: version, superseded: supersedes)
                } else {
                    versions[key]!.more.append(version)
                    versions[key]!.superseded += supersedes
                }
            }
        }
        phase("read the log")

        // 3. What the tables hold for them.
        var stored: [FieldKey: Stored] = [:]
        for table in ["fields", "conflicts"] {
            let loser = table == "conflicts"
            let statement = try db.cachedStatement(sql: "SELECT record, field, stamp, origin, value, seq FROM \(table) WHERE record = ?")
            for record in records {
                try statement.setArguments([record])
                try RawRow.each(statement, reading: table) { row in
                    let column = row.text
                    let stamp = row.int64(2)
                    let seq = row.int64(5)
                    scratch.removeAll(keepingCapacity: true)
                    ReplicaDigest.appendEntry(to: &scratch, record: column(0), field: column(1), stamp: UInt64(bitPattern: stamp),
                                              origin: column(3), value: column(4), loser: loser)
                    let hash = scratch.withUnsafeBytes { BucketSum.hashing($0) }
                    let origin = String(decoding: column(3), as: UTF8.self)
                    let version = NodeID(origin).flatMap { id in
                        seq >= 1 ? FieldVersion(value: Array(column(4)), stamp: Stamp(rawValue: UInt64(bitPattern: stamp)), origin: id, seq: UInt64(seq)) : nil
                    }
                    let row = StoredRow(version: version, origin: origin, seq: seq, hash: hash)
                    let key = FieldKey(record: record, field: String(decoding: column(1), as: UTF8.self))
                    if loser { stored[key, default: Stored()].losers.append(row) } else { stored[key, default: Stored()].winner = row }
                }
            }
        }
        phase("read the tables")

        // 4. Write what differs.
        for key in Set(versions.keys).union(stored.keys) {
            try repair(key, have: stored[key] ?? Stored(), want: versions[key]?.frontier)
        }
        phase("write")
    }

    /// The changes of `records` in `bodies`, decoded in parallel parts.
    static func changes(in bodies: [[UInt8]], of records: Set<String>) throws -> [[(FieldKey, FieldVersion, [CommitRef])]] {
        typealias Found = [(FieldKey, FieldVersion, [CommitRef])]
        let parts = max(1, min(ProcessInfo.processInfo.activeProcessorCount, bodies.count / 8))
        let size = (bodies.count + parts - 1) / parts
        /// One slot per part; each part writes only its own.
        struct Slots: @unchecked Sendable { let buffer: UnsafeMutableBufferPointer<Result<Found, CommitDecodingError>> }
        let out = Slots(buffer: .allocate(capacity: parts))
        out.buffer.initialize(repeating: .success([]))
        defer {
            _ = out.buffer.deinitialize()
            out.buffer.deallocate()
        }
        DispatchQueue.concurrentPerform(iterations: parts) { p in
            out.buffer[p] = Result { () throws(CommitDecodingError) -> Found in
                var found: Found = []
                for body in bodies[min(bodies.count, p * size)..<min(bodies.count, (p + 1) * size)] {
                    let commit = try Commit.Layout(body)
                    for change in commit.changes where records.contains(change.record) {
                        let version = FieldVersion(value: change.valueBytes, stamp: commit.stamp, origin: commit.ref.origin, seq: commit.ref.seq)
                        found.append((FieldKey(record: change.record, field: change.field), version, change.supersedes))
                    }
                }
                return found
            }
        }
        return try out.buffer.map { try $0.get() }
    }

    /// Brings one field's rows to its frontier, touching only rows that differ.
    mutating func repair(_ key: FieldKey, have: Stored, want: FieldFrontier?) throws {
        let bucket = ReplicaDigest.bucket(ofRecord: key.record)
        func add(_ sum: BucketSum, to sums: inout [Int: BucketSum]) { sums[bucket] = (sums[bucket] ?? .zero) + sum }
        func hash(_ v: FieldVersion, loser: Bool) -> BucketSum {
            ReplicaDigest.hash(record: key.record, field: key.field, version: v, loser: loser, scratch: &scratch)
        }
        for row in [have.winner].compactMap({ $0 }) + have.losers { add(row.hash, to: &before) }
        if let want {
            var sum = hash(want.winner, loser: false)
            for l in want.losers { sum = sum + hash(l, loser: true) }
            add(sum, to: &truth)
        }
        var change = BucketSum.zero
        var winnerChanged = false, losersChanged = false

        switch (have.winner, want) {
        case (nil, nil): break
        case (let row?, nil):
            try db.cachedStatement(sql: "DELETE FROM fields WHERE record = ? AND field = ?").execute(arguments: [key.record, key.field])
            change = change - row.hash
            winnerChanged = true
        case (let row, let want?) where row?.version != want.winner:
            let v = want.winner
            let arguments: StatementArguments = [String(decoding: v.value, as: UTF8.self), Int64(bitPattern: v.stamp.rawValue), v.origin.rawValue,
                                                 Int64(v.seq), key.record, key.field]
            try db.cachedStatement(sql: row == nil
                ? "INSERT INTO fields (value, stamp, origin, seq, record, field) VALUES (?, ?, ?, ?, ?, ?)"
                : "UPDATE fields SET value = ?, stamp = ?, origin = ?, seq = ? WHERE record = ? AND field = ?").execute(arguments: arguments)
            let h = hash(v, loser: false)
            change = change + h - (row?.hash ?? .zero)
            winnerChanged = true
        default: break
        }
        if winnerChanged { report.rowsWritten += 1 }

        let wanted = Set(want?.losers ?? [])
        var kept = Set<FieldVersion>()
        for row in have.losers {
            if let v = row.version, wanted.contains(v), kept.insert(v).inserted { continue }
            try db.cachedStatement(sql: "DELETE FROM conflicts WHERE record = ? AND field = ? AND origin = ? AND seq = ?")
                .execute(arguments: [key.record, key.field, row.origin, row.seq])
            change = change - row.hash
            losersChanged = true
            report.rowsWritten += 1
        }
        for v in want?.losers ?? [] where !kept.contains(v) {
            try db.cachedStatement(sql: "INSERT INTO conflicts (record, field, origin, seq, stamp, value) VALUES (?, ?, ?, ?, ?, ?)")
                .execute(arguments: [key.record, key.field, v.origin.rawValue, Int64(v.seq), Int64(bitPattern: v.stamp.rawValue),
                                     String(decoding: v.value, as: UTF8.self)])
            let h = hash(v, loser: true)
            change = change + h
            losersChanged = true
            report.rowsWritten += 1
        }
        guard winnerChanged || losersChanged else { return }
        add(change, to: &delta)
        if winnerChanged {
            report.fieldsRepaired += 1
            if report.examples.count < 20 { report.examples.append("\(key.record)~\(key.field)") }
        } else {
            report.conflictsRepaired += 1
        }
    }
}

extension ApplyContext {
    /// `Replica.rebuild` inside this transaction: also what a retirement that moved runs.
    mutating func rebuild(buckets: Set<Int>, records: Set<String>, divergence: [Int: BucketSum]) throws -> RebuildReport {
        var work = RecordRebuild(db: db)
        try work.rebuild(records)
        var whole = buckets
        for (bucket, difference) in divergence where difference + (work.delta[bucket] ?? .zero) != .zero { whole.insert(bucket) }
        if !whole.isEmpty {
            try work.rebuild(try Replica.recordIDs(inBuckets: whole, db))
        }
        work.report.bucketsRebuiltWhole = whole.count
        for bucket in whole {
            let truth = work.truth[bucket] ?? .zero
            if (work.before[bucket] ?? .zero) + (work.delta[bucket] ?? .zero) != truth { work.report.bucketsStillDiffering += 1 }
            if state.buckets[bucket] != truth {
                state.buckets[bucket] = truth
                markDirty(bucket)
            }
        }
        for (bucket, delta) in work.delta where delta != .zero && !whole.contains(bucket) && divergence[bucket] == nil {
            state.buckets[bucket] = state.buckets[bucket] + delta
            markDirty(bucket)
        }
        work.phase("digest")
        work.report.examples.sort()
        return work.report
    }
}
