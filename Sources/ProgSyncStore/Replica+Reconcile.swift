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
    public var missingCommitCount: Int { missingCommits.values.joined().reduce(0) { $0 + $1.count } }
    public var isClean: Bool { missingCommits.isEmpty && divergedBuckets.isEmpty }
}

/// What rebuilding records from the commit log changed.
public struct RebuildReport: Sendable {
    public var records = 0
    public var fieldsRepaired = 0
    public var conflictsRepaired = 0
    /// `record~field` of the first repaired fields, for the report.
    public var examples: [String] = []
    /// Milliseconds spent finding the records, reading the log, and comparing and writing.
    public var phases: [(String, Double)] = []
}

/// Entries packed back to back, with where each ends and its bucket.
struct EntryBatch: Sendable {
    var bytes: [UInt8] = []
    var ends: [Int] = []
    var buckets: [UInt16] = []
    init() {
        bytes.reserveCapacity(8192 * 160)
        ends.reserveCapacity(8192)
        buckets.reserveCapacity(8192)
    }
}

extension EntryBatch {
    /// The same bytes `ReplicaDigest.entryHash` / `loserHash` hash.
    mutating func append(record: String, field: String, version: FieldVersion, loser: Bool) {
        buckets.append(UInt16(ReplicaDigest.bucket(ofRecord: record)))
        ReplicaDigest.appendEntry(to: &bytes, record: record, field: field, version: version, loser: loser)
        ends.append(bytes.count)
    }
}

struct FieldKey: Hashable {
    var record: String
    var field: String
}

/// Hashes batches on its own serial queue and keeps the per-bucket sums there.
final class BucketHasher: @unchecked Sendable {
    private let queue = DispatchQueue(label: "progsync.digest")
    private let group = DispatchGroup()
    private var sums = [BucketSum](repeating: .zero, count: ReplicaDigest.bucketCount)

    func add(_ batch: EntryBatch) {
        guard !batch.ends.isEmpty else { return }
        queue.async(group: group) {
            batch.bytes.withUnsafeBytes { raw in
                var start = 0
                for (i, end) in batch.ends.enumerated() {
                    let b = Int(batch.buckets[i])
                    self.sums[b] = self.sums[b] + BucketSum.hashing(UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                    start = end
                }
            }
        }
    }

    func finish() -> [BucketSum] {
        group.wait()
        return queue.sync { sums }
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
    /// claim, and the winners add up to the maintained digest.
    public func checkIntegrity() throws -> IntegrityReport {
        try pool.read { db in
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
            let (actual, count) = try Self.sumBuckets(db)
            report.fieldsChecked = count
            report.divergedBuckets = (0..<ReplicaDigest.bucketCount).filter { actual[$0] != maintained[$0] }
            return report
        }
    }

    /// Recomputes every bucket from the winners table: what the digest should be.
    public func recomputeDigestBuckets() throws -> [BucketSum] {
        try pool.read { db in try Self.sumBuckets(db).buckets }
    }

    /// Sums the entry hashes of winners and losers per bucket straight off SQLite's row buffers:
    /// this runs over every field each night. This thread steps SQLite and packs entries into
    /// batches; a second one hashes them, so the two cores share the work.
    static func sumBuckets(_ db: Database) throws -> (buckets: [BucketSum], fields: Int) {
        let hasher = BucketHasher()
        let fields = try sumEntries(db, table: "fields", into: hasher)
        _ = try sumEntries(db, table: "conflicts", into: hasher)
        return (hasher.finish(), fields)
    }

    static func sumEntries(_ db: Database, table: String, into hasher: BucketHasher) throws -> Int {
        let loser = table == "conflicts"
        let statement = try db.makeStatement(sql: "SELECT record, field, stamp, origin, value FROM \(table)")
        let s = statement.sqliteStatement
        var batch = EntryBatch()
        var count = 0
        defer { sqlite3_reset(s) }
        while true {
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else {
                throw ReplicaError(.corrupt, "reading \(table): \(String(cString: sqlite3_errmsg(sqlite3_db_handle(s))))")
            }
            func column(_ i: Int32) -> UnsafeRawBufferPointer {
                UnsafeRawBufferPointer(start: sqlite3_column_text(s, i), count: Int(sqlite3_column_bytes(s, i)))
            }
            let record = column(0)
            batch.buckets.append(UInt16(ReplicaDigest.bucket(ofRecordBytes: record.assumingMemoryBound(to: UInt8.self))))
            ReplicaDigest.appendEntry(to: &batch.bytes, record: record, field: column(1), stamp: UInt64(bitPattern: sqlite3_column_int64(s, 2)),
                                      origin: column(3), value: column(4), loser: loser)
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

    /// Rebuilds every record in `buckets` (and `records`) from the commit log, which is signed
    /// and hash-chained, and writes back only what differs; the buckets' digest sums are set from
    /// the result. A field's frontier is every version no other version supersedes (§7), so it
    /// does not depend on the order the commits are read in.
    public func rebuild(buckets: Set<Int>, records extra: Set<String> = []) throws -> RebuildReport {
        try write { ctx in
            let db = ctx.db
            var report = RebuildReport()
            let clock = ContinuousClock()
            var mark = clock.now
            func phase(_ name: String) {
                let d = clock.now - mark
                report.phases.append((name, Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15))
                mark = clock.now
            }
            func wanted(_ record: String) -> Bool { extra.contains(record) || buckets.contains(ReplicaDigest.bucket(ofRecord: record)) }

            // 1. The commits that touched those records.
            var records = Set<String>()
            var lsns = Set<Int64>()
            let touched = try Row.fetchCursor(db, sql: "SELECT record, lsn FROM record_commits")
            while let row = try touched.next() {
                let record: String = row[0]
                guard wanted(record) else { continue }
                records.insert(record)
                lsns.insert(row[1])
            }
            phase("find")

            // 2. The truth: every version of their fields, minus every version some change superseded.
            // Most fields have one version, kept inline so the million-field case allocates little.
            struct Versions {
                var first: FieldVersion
                var more: [FieldVersion] = []
                var superseded: [CommitRef] = []
                var frontier: FieldFrontier? {
                    if more.isEmpty && superseded.isEmpty { return FieldFrontier(winner: first) }
                    return MergeRule.frontier(of: [first] + more, superseded: Set(superseded))
                }
            }
            var versions: [FieldKey: Versions] = [:]
            let commits = try Row.fetchCursor(db, sql: "SELECT lsn, body FROM commits WHERE status = 0 ORDER BY lsn")
            while let row = try commits.next() {
                guard lsns.contains(row[0]) else { continue }
                let stored = try Commit.Layout([UInt8](row[1] as Data))
                for change in stored.changes where records.contains(change.record) {
                    let version = FieldVersion(value: change.valueBytes, stamp: stored.stamp, origin: stored.ref.origin, seq: stored.ref.seq)
                    let key = FieldKey(record: change.record, field: change.field)
                    if versions[key] == nil {
                        versions[key] = Versions(first: version, superseded: change.supersedes)
                    } else {
                        versions[key]!.more.append(version)
                        versions[key]!.superseded += change.supersedes
                    }
                }
            }
            phase("read the log")

            // 3. What the tables hold for those records, in one pass each.
            var current: [FieldKey: FieldFrontier] = [:]
            var unreadable = Set<FieldKey>()  // rows no commit could have written: always rewritten
            for table in ["fields", "conflicts"] {
                let rows = try Row.fetchCursor(db, sql: "SELECT record, field, value, stamp, origin, seq FROM \(table)")
                while let row = try rows.next() {
                    let record: String = row[0]
                    guard records.contains(record) || wanted(record) else { continue }
                    records.insert(record)
                    let key = FieldKey(record: record, field: row[1])
                    guard let v = try? Self.version(value: row[2], stamp: row[3], origin: row[4], seq: row[5]) else {
                        unreadable.insert(key)
                        continue
                    }
                    if table == "fields" {
                        current[key] = FieldFrontier(winner: v)
                    } else if current[key] == nil {
                        current[key] = FieldFrontier(winner: v)  // a loser without a winner row
                        unreadable.insert(key)
                    } else {
                        current[key]!.losers.append(v)
                    }
                }
            }
            phase("read the tables")

            // 4. Write back what differs, and collect the digest entries of whole buckets.
            let hasher = BucketHasher()
            var batch = EntryBatch()
            func repair(_ key: FieldKey, have: FieldFrontier?, want: FieldFrontier?) throws {
                var have = have
                if (have?.losers.count ?? 0) > 1 { have!.losers.sort { FieldVersion.wins($0, over: $1) } }
                let broken = unreadable.contains(key)
                guard have != want || broken else { return }
                if have?.winner != want?.winner || broken {
                    report.fieldsRepaired += 1
                    if report.examples.count < 20 { report.examples.append("\(key.record)~\(key.field)") }
                } else {
                    report.conflictsRepaired += 1
                }
                try db.cachedStatement(sql: "DELETE FROM fields WHERE record = ? AND field = ?").execute(arguments: [key.record, key.field])
                try db.cachedStatement(sql: "DELETE FROM conflicts WHERE record = ? AND field = ?").execute(arguments: [key.record, key.field])
                guard let want else { return }
                for (i, v) in want.versions.enumerated() {
                    try db.cachedStatement(
                        sql: i == 0
                            ? "INSERT INTO fields (record, field, value, stamp, origin, seq) VALUES (?, ?, ?, ?, ?, ?)"
                            : "INSERT INTO conflicts (record, field, value, stamp, origin, seq) VALUES (?, ?, ?, ?, ?, ?)"
                    ).execute(arguments: [key.record, key.field, String(decoding: v.value, as: UTF8.self), Int64(bitPattern: v.stamp.rawValue),
                                          v.origin.rawValue, Int64(v.seq)])
                }
            }
            for (key, v) in versions {
                let want = v.frontier
                try repair(key, have: current.removeValue(forKey: key), want: want)
                guard let want, buckets.contains(ReplicaDigest.bucket(ofRecord: key.record)) else { continue }
                batch.append(record: key.record, field: key.field, version: want.winner, loser: false)
                for l in want.losers { batch.append(record: key.record, field: key.field, version: l, loser: true) }
                if batch.ends.count >= 8192 {
                    hasher.add(batch)
                    batch = EntryBatch()
                }
            }
            hasher.add(batch)
            // Rows the log does not explain.
            for (key, have) in current where versions[key] == nil { try repair(key, have: have, want: nil) }
            for key in unreadable where versions[key] == nil && current[key] == nil { try repair(key, have: nil, want: nil) }
            versions = [:]
            report.examples.sort()
            report.records = records.count
            phase("write")

            // 5. The digest: whole buckets are summed from the truth (above); buckets touched only
            // through `records` are summed from the tables, now repaired.
            var sums = hasher.finish()
            let partial = Set(records.map(ReplicaDigest.bucket(ofRecord:))).subtracting(buckets)
            if !partial.isEmpty {
                let all = try Self.sumBuckets(db).buckets
                for bucket in partial { sums[bucket] = all[bucket] }
            }
            for bucket in buckets.union(partial) where ctx.state.buckets[bucket] != sums[bucket] {
                ctx.state.buckets[bucket] = sums[bucket]
                ctx.markDirty(bucket)
            }
            phase("digest")
            return report
        }
    }
}
