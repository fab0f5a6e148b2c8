// The merge benchmark: 1,000,000 field changes (100,000 activities × 10 fields, from 3 origins,
// one commit per activity) applied to an empty durable replica, signatures checked, next to raw
// SQLite upserts of the same rows through one prepared statement in one transaction.
//
//   swift run -c release ProgSyncBench [activities] [runs]
//
// The last line is `merge: <N> changes/s, raw sqlite: <M> rows/s, ratio: <N/M>` (medians).
import Foundation
import GRDB
import GRDBSQLite
import ProgSyncCore
import ProgSyncStore

let arguments = CommandLine.arguments.dropFirst()
let activityCount = arguments.first.flatMap(Int.init) ?? 100_000
let runs = arguments.dropFirst().first.flatMap(Int.init) ?? 3
let batchSize = Int(ProcessInfo.processInfo.environment["PROGSYNC_BENCH_BATCH"] ?? "") ?? 10_000  // commits per transaction (a bulk pull or a bundle)
// For profiling one phase: PROGSYNC_BENCH_MERGE_ONLY=1 stops after the first merge.
let mergeOnly = ProcessInfo.processInfo.environment["PROGSYNC_BENCH_MERGE_ONLY"] != nil

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

func fmt(_ x: Double) -> String { String(format: "%.0f", x) }

let folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-bench-\(getpid())")
try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: folder) }

// Three organisations, each creating the activities it owns.
let orgs = ["politie", "comensha", "nla"]
let identities = orgs.map { _ in NodeIdentity() }
let registry = PartnerRegistry(
    nodes: zip(orgs, identities).map { PartnerRegistry.Node(org: $0, publicKey: $1.publicKey) }, coordinators: ["jenv"])
let statuses = ProgrammeStatus.allCases.map(\.rawValue)

print("generating and signing \(activityCount) commits (\(activityCount * 10) changes) from \(orgs.count) origins…")
var commits: [SignedCommit] = []
commits.reserveCapacity(activityCount)
var heads = [[UInt8]](repeating: [], count: orgs.count)
var seqs = [UInt64](repeating: 0, count: orgs.count)
let startMs: UInt64 = 1_700_000_000_000
for i in 0..<activityCount {
    let o = i % orgs.count
    let id = "al\(i % 5 + 1).r\(i % 34 + 1).a\(i)"
    let changes: [Change] = [
        Change(record: id, field: "kind", value: "activity"),
        Change(record: id, field: "result", value: .string("al\(i % 5 + 1).r\(i % 34 + 1)")),
        Change(record: id, field: "number", value: .int(Int64(i % 40 + 1))),
        Change(record: id, field: "title", value: .string("Activiteit \(i): training en voorlichting voor professionals")),
        Change(record: id, field: "status", value: .string(statuses[i % statuses.count])),
        Change(record: id, field: "explanation", value: .string(String(repeating: "Toelichting bij de stand van zaken. ", count: 4))),
        Change(record: id, field: "owner", value: .string(orgs[o])),
        Change(record: id, field: "partners", value: ["om", "comensha"]),
        Change(record: id, field: "due", value: "2026-12-31"),
        Change(record: id, field: "links", value: [.string("https://example.org/\(i)")]),
    ]
    seqs[o] += 1
    let commit = Commit(origin: identities[o].id, seq: seqs[o], stamp: Stamp(milliseconds: startMs + UInt64(i), counter: 0),
                        author: "bench", prev: heads[o], changes: changes)
    let signed = try SignedCommit.sign(commit, with: identities[o])
    heads[o] = signed.hash
    commits.append(signed)
}
let changeCount = commits.reduce(0) { $0 + $1.commit.changes.count }
let batches = stride(from: 0, to: commits.count, by: batchSize).map { Array(commits[$0..<min($0 + batchSize, commits.count)]) }

var mergeRates: [Double] = [], rawRates: [Double] = [], noopRates: [Double] = [], digestTimes: [Double] = [], singleRates: [Double] = []
for run in 1...runs {
    // The replica: a durable file, signatures checked per contiguous run, one transaction per batch.
    let path = folder.appendingPathComponent("replica-\(run).sqlite").path
    let replica = try Replica(configuration: ReplicaConfiguration(
        path: path, identity: NodeIdentity(), org: "jenv", registry: registry, now: { startMs + 10_000_000 }))
    let mergeTime = try seconds {
        for batch in batches {
            let report = try replica.apply(batch)
            precondition(report.applied == batch.count, "batch not applied: \(report.rejected.prefix(3)) \(report.held.prefix(3))")
        }
    }
    if mergeOnly {
        print("merge only: \(fmt(Double(changeCount) / mergeTime)) changes/s")
        exit(0)
    }
    let noopTime = try seconds {
        for batch in batches {
            let report = try replica.apply(batch)
            precondition(report.duplicates == batch.count)
        }
    }
    var root: [UInt8] = []
    let digestTime = try seconds {
        root = ReplicaDigest.root(try replica.recomputeDigestBuckets())
    }
    precondition(root == replica.digestRoot, "maintained digest differs from recomputation")

    // One commit per transaction with a signature check each: how commits arrive singly.
    let singlePath = folder.appendingPathComponent("single-\(run).sqlite").path
    let single = try Replica(configuration: ReplicaConfiguration(
        path: singlePath, identity: NodeIdentity(), org: "jenv", registry: registry, now: { startMs + 10_000_000 }))
    let singleCount = min(3000, commits.count)
    let singleTime = try seconds {
        for c in commits.prefix(singleCount) { try single.apply([c]) }
    }
    try single.close()
    try replica.close()

    // The anchor: raw upserts of the same rows into a table of the same shape.
    let rawPath = folder.appendingPathComponent("raw-\(run).sqlite").path
    let queue = try DatabaseQueue(path: rawPath)
    try queue.writeWithoutTransaction { db in
        // The replica's own settings, so the comparison is like for like.
        try db.execute(sql: "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -65536")
        try db.execute(sql: """
            CREATE TABLE fields (record TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, stamp INTEGER NOT NULL,
            origin TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (record, field)) WITHOUT ROWID
            """)
    }
    let rows: [(String, String, String, Int64, String, Int64)] = commits.flatMap { c in
        c.commit.changes.map {
            ($0.record, $0.field, $0.value.canonicalString, Int64(c.commit.stamp.rawValue), c.commit.origin.rawValue, Int64(c.commit.seq))
        }
    }
    let rawTime = try seconds {
        try queue.inTransaction { db in
            let statement = try db.makeStatement(sql: """
                INSERT INTO fields (record, field, value, stamp, origin, seq) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (record, field) DO UPDATE SET value = excluded.value, stamp = excluded.stamp,
                origin = excluded.origin, seq = excluded.seq
                """)
            // Bound straight through the SQLite C API, as the replica's hot path does.
            let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
            func bindText(_ i: Int32, _ s: String) {
                var s = s
                _ = s.withUTF8 { sqlite3_bind_text(statement.sqliteStatement, i, $0.baseAddress, Int32($0.count), transient) }
            }
            for r in rows {
                bindText(1, r.0)
                bindText(2, r.1)
                bindText(3, r.2)
                sqlite3_bind_int64(statement.sqliteStatement, 4, r.3)
                bindText(5, r.4)
                sqlite3_bind_int64(statement.sqliteStatement, 6, r.5)
                guard sqlite3_step(statement.sqliteStatement) == SQLITE_DONE else { fatalError("upsert failed") }
                sqlite3_reset(statement.sqliteStatement)
            }
            return .commit
        }
    }
    try queue.close()
    for p in [path, singlePath, rawPath] {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: p + suffix) }
    }

    mergeRates.append(Double(changeCount) / mergeTime)
    noopRates.append(Double(changeCount) / noopTime)
    rawRates.append(Double(rows.count) / rawTime)
    digestTimes.append(digestTime)
    singleRates.append(Double(singleCount * 10) / singleTime)
    print("run \(run): merge \(fmt(mergeRates.last!)) changes/s (\(String(format: "%.2f", mergeTime)) s), re-apply \(fmt(noopRates.last!)) changes/s, "
        + "raw sqlite \(fmt(rawRates.last!)) rows/s, digest over \(changeCount) fields \(String(format: "%.0f", digestTime * 1000)) ms, "
        + "single commits \(fmt(singleRates.last!)) changes/s")
}

let merge = median(mergeRates), raw = median(rawRates)
print("re-apply (no-op): \(fmt(median(noopRates))) changes/s")
print("digest recompute over \(changeCount) fields: \(String(format: "%.0f", median(digestTimes) * 1000)) ms")
print("single commits (one transaction and signature check each): \(fmt(median(singleRates))) changes/s")
print("merge: \(fmt(merge)) changes/s, raw sqlite: \(fmt(raw)) rows/s, ratio: \(String(format: "%.2f", merge / raw))")
