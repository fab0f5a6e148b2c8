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

    public init(record: String, field: String, stamp: Stamp, origin: String, seq: UInt64, hash: [UInt8]) {
        self.record = record
        self.field = field
        self.stamp = stamp
        self.origin = origin
        self.seq = seq
        self.hash = hash
    }

    public var key: String { record + "~" + field }
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

    /// Sums the winners' entry hashes per bucket straight off SQLite's row buffers: this runs
    /// over every field each night, so it avoids a Swift string per column.
    static func sumBuckets(_ db: Database, onlyRecords filter: ((String) -> Bool)? = nil) throws -> (buckets: [BucketSum], fields: Int) {
        var buckets = [BucketSum](repeating: .zero, count: ReplicaDigest.bucketCount)
        let statement = try db.makeStatement(sql: "SELECT record, field, stamp, origin, value FROM fields")
        let s = statement.sqliteStatement
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1024)
        var count = 0
        while true {
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else {
                throw ReplicaError(.corrupt, "reading fields: \(String(cString: sqlite3_errmsg(sqlite3_db_handle(s))))")
            }
            buffer.removeAll(keepingCapacity: true)
            func append(_ column: Int32) {
                if let p = sqlite3_column_text(s, column) {
                    buffer.append(contentsOf: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(s, column))))
                }
            }
            append(0)
            let recordLength = buffer.count
            let bucket = buffer.withUnsafeBufferPointer { ReplicaDigest.bucket(ofRecordBytes: UnsafeBufferPointer(rebasing: $0[0..<recordLength])) }
            buffer.append(0)
            append(1)
            buffer.append(0)
            withUnsafeBytes(of: UInt64(bitPattern: sqlite3_column_int64(s, 2)).bigEndian) { buffer.append(contentsOf: $0) }
            append(3)
            buffer.append(0)
            append(4)
            buckets[bucket] = buckets[bucket] + BucketSum(bytes: Array(SHA256.hash(data: buffer)))
            count += 1
        }
        sqlite3_reset(s)
        return (buckets, count)
    }

    /// The winners in the given buckets, for a peer narrowing a difference.
    public func digestEntries(buckets: Set<Int>) throws -> [DigestEntry] {
        try pool.read { db in
            var out: [DigestEntry] = []
            let rows = try Row.fetchCursor(db, sql: "SELECT record, field, value, stamp, origin, seq FROM fields")
            while let row = try rows.next() {
                let record: String = row[0]
                guard buckets.contains(ReplicaDigest.bucket(ofRecord: record)) else { continue }
                let field: String = row[1]
                let version = try Self.version(value: row[2], stamp: row[3], origin: row[4], seq: row[5])
                out.append(DigestEntry(record: record, field: field, stamp: version.stamp, origin: version.origin.rawValue,
                                       seq: version.seq, hash: ReplicaDigest.entryHash(record: record, field: field, version: version).bytes))
            }
            return out
        }
    }

    // MARK: Repair

    /// Rebuilds every record in `buckets` from the commit log, which is signed and hash-chained,
    /// and writes back only what differs; the buckets' digest sums are set from the result. The
    /// frontier of a field is every version no other version supersedes (§7), so it does not
    /// depend on the order the commits are read in.
    public func rebuild(buckets: Set<Int>, records extra: Set<String> = []) throws -> RebuildReport {
        try write { ctx in
            let db = ctx.db
            var report = RebuildReport()
            func wanted(_ record: String) -> Bool { extra.contains(record) || buckets.contains(ReplicaDigest.bucket(ofRecord: record)) }
            var records = Set<String>()
            var lsns = Set<Int64>()
            let touched = try Row.fetchCursor(db, sql: "SELECT record, lsn FROM record_commits")
            while let row = try touched.next() {
                let record: String = row[0]
                guard wanted(record) else { continue }
                records.insert(record)
                lsns.insert(row[1])
            }
            for record in try String.fetchAll(db, sql: "SELECT DISTINCT record FROM fields") where wanted(record) {
                records.insert(record)
            }
            // Every version of every field of those records, with what each supersedes.
            struct Versions { var all: [FieldVersion] = []; var superseded = Set<CommitRef>() }
            var expected: [String: [String: Versions]] = [:]
            let commits = try Row.fetchCursor(db, sql: "SELECT lsn, body FROM commits WHERE status = 0 ORDER BY lsn")
            while let row = try commits.next() {
                guard lsns.contains(row[0]) else { continue }
                let commit = try Commit(canonicalBytes: [UInt8](row[1] as Data))
                for change in commit.changes where records.contains(change.record) {
                    let version = FieldVersion(value: change.valueBytes, stamp: commit.stamp, origin: commit.origin, seq: commit.seq)
                    expected[change.record, default: [:]][change.field, default: Versions()].all.append(version)
                    expected[change.record]![change.field]!.superseded.formUnion(change.supersedes)
                }
            }
            var sums: [Int: BucketSum] = Dictionary(uniqueKeysWithValues: buckets.map { ($0, BucketSum.zero) })
            for record in records.sorted() {
                report.records += 1
                var current: [String: FieldFrontier] = [:]
                for r in try Row.fetchAll(db, sql: "SELECT field, value, stamp, origin, seq FROM fields WHERE record = ?", arguments: [record]) {
                    current[r[0]] = FieldFrontier(winner: try Self.version(value: r[1], stamp: r[2], origin: r[3], seq: r[4]))
                }
                for r in try Row.fetchAll(db, sql: "SELECT field, value, stamp, origin, seq FROM conflicts WHERE record = ?", arguments: [record]) {
                    let loser = try Self.version(value: r[1], stamp: r[2], origin: r[3], seq: r[4])
                    let field: String = r[0]
                    current[field]?.losers.append(loser)
                    if current[field] == nil { current[field] = FieldFrontier(winner: loser) }  // an orphan loser row
                }
                var truth: [String: FieldFrontier] = [:]
                for (field, versions) in expected[record] ?? [:] {
                    let alive = Set(versions.all).filter { !versions.superseded.contains($0.ref) }.sorted { FieldVersion.wins($0, over: $1) }
                    if let winner = alive.first { truth[field] = FieldFrontier(winner: winner, losers: Array(alive.dropFirst())) }
                }
                let bucket = ReplicaDigest.bucket(ofRecord: record)
                for (field, frontier) in truth {
                    let entry = ReplicaDigest.entryHash(record: record, field: field, version: frontier.winner)
                    sums[bucket] = (sums[bucket] ?? .zero) + entry
                }
                for field in Set(current.keys).union(truth.keys).sorted() {
                    var have = current[field]
                    have?.losers.sort { FieldVersion.wins($0, over: $1) }
                    let want = truth[field]
                    guard have != want else { continue }
                    if have?.winner != want?.winner {
                        report.fieldsRepaired += 1
                        if report.examples.count < 20 { report.examples.append("\(record)~\(field)") }
                    } else {
                        report.conflictsRepaired += 1
                    }
                    try db.execute(sql: "DELETE FROM fields WHERE record = ? AND field = ?", arguments: [record, field])
                    try db.execute(sql: "DELETE FROM conflicts WHERE record = ? AND field = ?", arguments: [record, field])
                    guard let want else { continue }
                    for (i, v) in want.versions.enumerated() {
                        try db.execute(
                            sql: i == 0
                                ? "INSERT INTO fields (record, field, value, stamp, origin, seq) VALUES (?, ?, ?, ?, ?, ?)"
                                : "INSERT INTO conflicts (record, field, value, stamp, origin, seq) VALUES (?, ?, ?, ?, ?, ?)",
                            arguments: [record, field, String(decoding: v.value, as: UTF8.self), Int64(bitPattern: v.stamp.rawValue),
                                        v.origin.rawValue, Int64(v.seq)])
                    }
                }
            }
            // Buckets named by `extra` alone were not rebuilt whole: recompute them from the table.
            let partial = Set(records.map(ReplicaDigest.bucket(ofRecord:))).subtracting(buckets)
            if !partial.isEmpty {
                let all = try Self.sumBuckets(db).buckets
                for bucket in partial { sums[bucket] = all[bucket] }
            }
            for (bucket, sum) in sums where ctx.state.buckets[bucket] != sum {
                ctx.state.buckets[bucket] = sum
                ctx.dirtyBuckets.insert(bucket)
            }
            return report
        }
    }
}
