// The as-of benchmark: the programme as of a date, over 100,000 activities whose log holds their
// creation (2022) and one status change each (half in 2022, half in 2023), from 3 origins, next to
// the anchor of the same run: listing the current state of the same activities.
//
//   swift run -c release ProgSyncAsOfBench [activities] [runs]
//
// Both sides produce every activity's rows (fields and conflict losers, as a list answer is
// written from). The last line is
// `as-of 2022-12-31 over <N> activities: <X> ms, current-state list: <Y> ms, ratio: <X/Y>` (medians).
import Foundation
import ProgSyncCore
import ProgSyncStore

let arguments = CommandLine.arguments.dropFirst()
let activityCount = arguments.first.flatMap(Int.init) ?? 100_000
let runs = arguments.dropFirst().first.flatMap(Int.init) ?? 5

/// Wall-clock and CPU milliseconds of `body`: this machine is shared, so the CPU time (the
/// process's, all threads) says what the work costs when the wall clock waits for a core.
func milliseconds(_ body: () throws -> Void) rethrows -> (wall: Double, cpu: Double) {
    func cpu() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) * 1e3 + Double(ts.tv_nsec) / 1e6
    }
    let start = DispatchTime.now().uptimeNanoseconds
    let startCPU = cpu()
    try body()
    return (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6, cpu() - startCPU)
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
func fmt(_ x: Double) -> String { String(format: "%.0f", x) }

let folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-asof-bench-\(getpid())")
try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: folder) }

let orgs = ["politie", "comensha", "nla"]
let identities = orgs.map { _ in NodeIdentity() }
let registry = PartnerRegistry(
    nodes: zip(orgs, identities).map { PartnerRegistry.Node(org: $0, publicKey: $1.publicKey) }, coordinators: ["jenv"])
let statuses = ProgrammeStatus.allCases.map(\.rawValue)
let start2022: UInt64 = 1_640_991_600_000  // 2022-01-01T00:00:00+01:00
let year: UInt64 = 365 * 86_400_000

print("generating and signing the log of \(activityCount) activities (creation and one status change each)…")
var chains = orgs.indices.map { _ in (seq: UInt64(0), head: [UInt8]()) }
var commits: [SignedCommit] = []
@MainActor func sign(_ o: Int, stamp: UInt64, ownerRefs: [String: CommitRef] = [:], _ changes: [Change]) throws -> SignedCommit {
    chains[o].seq += 1
    let commit = Commit(origin: identities[o].id, seq: chains[o].seq, stamp: Stamp(milliseconds: stamp, counter: 0),
                        author: "bench", prev: chains[o].head, ownerRefs: ownerRefs, changes: changes)
    let signed = try SignedCommit.sign(commit, with: identities[o])
    chains[o].head = signed.hash
    commits.append(signed)
    return signed
}
func id(_ i: Int) -> String { "al\(i % 5 + 1).r\(i % 34 + 1).a\(i)" }
// Creation: ten activities a commit (an import), through the first half of 2022.
var created: [CommitRef] = []
for first in stride(from: 0, to: activityCount, by: 10) {
    let o = first / 10 % orgs.count
    let changes = (first..<min(first + 10, activityCount)).flatMap { i -> [Change] in
        [
            Change(record: id(i), field: "kind", value: "activity"),
            Change(record: id(i), field: "result", value: .string("al\(i % 5 + 1).r\(i % 34 + 1)")),
            Change(record: id(i), field: "number", value: .int(Int64(i % 40 + 1))),
            Change(record: id(i), field: "title", value: .string("Activiteit \(i): training en voorlichting voor professionals")),
            Change(record: id(i), field: "status", value: "not-started"),
            Change(record: id(i), field: "explanation", value: .string(String(repeating: "Toelichting bij de stand van zaken. ", count: 4))),
            Change(record: id(i), field: "owner", value: .string(orgs[o])),
            Change(record: id(i), field: "partners", value: ["om", "comensha"]),
            Change(record: id(i), field: "due", value: "2026-12-31"),
            Change(record: id(i), field: "links", value: [.string("https://example.org/\(i)")]),
        ]
    }
    let stamp = start2022 + UInt64(first) * (year / 2) / UInt64(activityCount)
    let ref = try sign(o, stamp: stamp, changes).ref
    for _ in first..<min(first + 10, activityCount) { created.append(ref) }
}
// One status change per activity by its owner, spread from mid-2022 to mid-2023.
for i in 0..<activityCount {
    let o = i / 10 % orgs.count
    let stamp = start2022 + year / 2 + UInt64(i) * year / UInt64(activityCount)
    _ = try sign(o, stamp: stamp, ownerRefs: [id(i): created[i]], [
        Change(record: id(i), field: "status", value: .string(statuses[i % statuses.count]), supersedes: [created[i]]),
    ])
}
commits.sort { $0.commit.stamp < $1.commit.stamp }
let changeCount = commits.reduce(0) { $0 + $1.commit.changes.count }

let path = folder.appendingPathComponent("replica.sqlite").path
let replica = try Replica(configuration: ReplicaConfiguration(
    path: path, identity: NodeIdentity(), org: "jenv", registry: registry, now: { start2022 + 3 * year }))
print("applying \(commits.count) commits (\(changeCount) changes)…")
for batch in stride(from: 0, to: commits.count, by: 10_000).map({ Array(commits[$0..<min($0 + 10_000, commits.count)]) }) {
    let report = try replica.apply(batch)
    precondition(report.applied == batch.count, "batch not applied: \(report.rejected.prefix(3)) \(report.held.prefix(3))")
}

let endOf2022 = try AsOf(parsing: "2022-12-31")
var activities = RecordQuery()
activities.kind = "activity"
activities.limit = activityCount
var asOfTimes: [(wall: Double, cpu: Double)] = [], nowTimes: [(wall: Double, cpu: Double)] = []
var currentTimes: [(wall: Double, cpu: Double)] = [], passTimes: [(wall: Double, cpu: Double)] = [], singleTimes: [Double] = []
var changedByThen = 0
for run in 1...runs {
    var rows = 0
    let asOf = try milliseconds {
        let then = try replica.recordsAsOf(endOf2022.cut)
        let ids = then.recordIDs(activities).ids
        precondition(ids.count == activityCount)
        for id in ids {
            let fields = then.rows(ofRecord: id)
            rows += fields.count
            if fields.first(where: { $0.field == "status" })?.value != Array(#""not-started""#.utf8) { changedByThen += 1 }
        }
    }
    let pass = try milliseconds { _ = try replica.recordsAsOf(endOf2022.cut) }
    passTimes.append(pass)
    let asOfNow = try milliseconds {
        let then = try replica.recordsAsOf(Stamp(rawValue: .max >> 1))
        for id in then.recordIDs(activities).ids { rows += then.rows(ofRecord: id).count }
    }
    let current = try milliseconds {
        for id in try replica.recordIDs(activities).ids { rows += try replica.storedRows(ofRecord: id).count }
    }
    let single = try milliseconds {
        for i in stride(from: 0, to: activityCount, by: activityCount / 1000) { rows += try replica.storedRows(ofRecord: id(i), asOf: endOf2022.cut).count }
    }.wall / 1000
    asOfTimes.append(asOf)
    nowTimes.append(asOfNow)
    currentTimes.append(current)
    singleTimes.append(single)
    func show(_ t: (wall: Double, cpu: Double)) -> String { "\(fmt(t.wall)) ms (cpu \(fmt(t.cpu)))" }
    print("run \(run): as-of 2022-12-31 \(show(asOf)) (the log pass alone \(show(pass))), as-of now \(show(asOfNow)), current-state list \(show(current)), "
        + "one record as-of \(String(format: "%.2f", single)) ms (\(rows) rows)")
}
try replica.close()
print("status changed by the end of 2022: \(changedByThen / runs) of \(activityCount) activities")
print("one record as of 2022-12-31: \(String(format: "%.2f", median(singleTimes))) ms; as of now (the whole log): "
    + "\(fmt(median(nowTimes.map(\.wall)))) ms (cpu \(fmt(median(nowTimes.map(\.cpu)))))")
let x = median(asOfTimes.map(\.wall)), y = median(currentTimes.map(\.wall))
let xc = median(asOfTimes.map(\.cpu)), yc = median(currentTimes.map(\.cpu))
print("as-of 2022-12-31 over \(activityCount) activities: \(fmt(x)) ms (cpu \(fmt(xc))), current-state list: \(fmt(y)) ms (cpu \(fmt(yc))), "
    + "ratio: \(String(format: "%.2f", x / y))")
