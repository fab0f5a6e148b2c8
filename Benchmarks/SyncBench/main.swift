// Partner sync benchmark between real progsyncd processes over mutual TLS on loopback.
//
//   swift build -c release --product progsyncd && swift run -c release ProgSyncSyncBench [activities] [changes]
//
// 1. Initial sync: node A holds `activities` × 10 fields (imported, commits of 500 changes); a new
//    node B joins. Time from B's start until both digests match. In the same run, the same commits
//    are merged in-process into an empty replica (the merge-only rate).
// 2. Propagation: `changes` status changes on A, one at a time; for each, the time until B's change
//    stream (/v1/events) shows it.
// 3. Reconciliation: B reconciles with A, three times with equal replicas, then three times after
//    1% of B's fields were changed in SQLite behind the daemon's back (stop, corrupt, start), then
//    three times after 0.01%. The anchor is one raw SQLite pass over B's fields table in the same run.
// The last two lines are `initial-sync: <N> changes/s over TLS (merge-only <M> changes/s, ratio <N/M>)`
// and `reconcile: equal <X> ms, 1% diverged <Y> ms (<Y/X>x), 0.01% diverged <Z> ms (<Z/X>x)` (medians).
import Foundation
import GRDB
import ProgSyncBenchSupport
import ProgSyncCore
import ProgSyncHTTPClient
import ProgSyncStore

#if canImport(Glibc)
import Glibc
#endif

let args = CommandLine.arguments.dropFirst()
let activities = args.first.flatMap(Int.init) ?? 100_000
let propagationChanges = args.dropFirst().first.flatMap(Int.init) ?? 1000

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func percentile(_ xs: [Double], _ p: Double) -> Double {
    let sorted = xs.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func fmt(_ x: Double, _ decimals: Int = 0) -> String { String(format: "%.\(decimals)f", x) }

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

let binDir = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
let progsyncd = ProcessInfo.processInfo.environment["PROGSYNCD"] ?? binDir + "/progsyncd"
guard FileManager.default.isExecutableFile(atPath: progsyncd) else {
    print("no progsyncd at \(progsyncd): build it first (swift build -c release --product progsyncd)")
    exit(1)
}
let root = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-syncbench-\(getpid())").path
try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
nonisolated(unsafe) var children: [Process] = []
defer {
    for p in children where p.isRunning { kill(p.processIdentifier, SIGTERM); p.waitUntilExit() }
    try? FileManager.default.removeItem(atPath: root)
}

struct Node {
    var name: String
    var folder: String
    var port: Int
    var id: String
    var publicKey: String
    var pin: String
    var client: HTTPClient
}

func makeNode(_ name: String, org: String) throws -> Node {
    let folder = root + "/" + name
    let out = try output(of: progsyncd, ["init", "--data-dir", folder, "--org", org, "--name", name])
    let identity = try JSONParser.parse([UInt8](FileManager.default.contents(atPath: folder + "/identity.json")!))
    let pin = out.split(separator: "\n").first { $0.hasPrefix("certificate:") }.map {
        String($0.dropFirst("certificate:".count)).trimmingCharacters(in: .whitespaces)
    } ?? ""
    return Node(name: name, folder: folder, port: freeLoopbackPort(), id: identity["id"]!.stringValue!, publicKey: identity["publicKey"]!.stringValue!,
                pin: pin, client: try HTTPClient(configuration: .init(unixSocketPath: folder + "/progsync.sock", requestTimeout: .seconds(600))))
}

func writeRegistry(_ nodes: [Node], for me: Node, links: Set<String>) throws {
    let orgs: [JSONValue] = nodes.map { n in
        var entry: [String: JSONValue] = ["id": .string(n.id), "name": .string(n.name), "publicKey": .string(n.publicKey), "certificatePin": .string(n.pin)]
        if links.contains(n.name) { entry["address"] = .string("https://127.0.0.1:\(n.port)") }
        return .object(["code": .string(n.name), "nodes": .array([.object(entry)])])
    }
    try JSONValue.object(["coordinators": ["a"], "orgs": .array(orgs)]).prettyString().write(toFile: me.folder + "/registry.json", atomically: true, encoding: .utf8)
}

func start(_ node: Node) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: progsyncd)
    p.arguments = ["--data-dir", node.folder, "--empty", "--log-level", "warning"]
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PROGSYNC_") }
    env["PROGSYNC_PEERS_LISTEN"] = "127.0.0.1:\(node.port)"
    p.environment = env
    FileManager.default.createFile(atPath: node.folder + "/daemon.log", contents: nil)
    p.standardError = FileHandle(forWritingAtPath: node.folder + "/daemon.log")
    try p.run()
    children.append(p)
    for _ in 0..<400 {
        if FileManager.default.fileExists(atPath: node.folder + "/progsync.sock") { return }
        usleep(25_000)
    }
    throw BenchError("\(node.name) did not start")
}

func call(_ node: Node, _ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> JSONValue {
    for attempt in 0..<100 {
        do {
            let r = try await node.client.send(HTTPClientRequest(method: method, url: "http://localhost" + path, body: body?.canonicalBytes))
            guard r.status < 300 else { throw BenchError("\(method) \(path): HTTP \(r.status) \(String(decoding: r.body.prefix(300), as: UTF8.self))") }
            return try JSONParser.parse(r.body, maxDepth: 64)
        } catch let e as HTTPClientError where e.code == .couldNotConnect && attempt < 99 {
            try await Task.sleep(for: .milliseconds(50))
        }
    }
    throw BenchError("unreachable")
}

var a = try makeNode("a", org: "a")
var b = try makeNode("b", org: "b")
try writeRegistry([a, b], for: a, links: [])
try writeRegistry([a, b], for: b, links: ["a"])
try start(a)

// Load A: activities × 10 fields, through the import route (commits of 500 changes).
print("loading \(activities) activities (\(activities * 10) field changes) into node A…")
let statuses = ProgrammeStatus.allCases.map(\.rawValue)
let chunk = 20_000
var loadStart = now()
for base in stride(from: 0, to: activities, by: chunk) {
    let records: [JSONValue] = (base..<min(base + chunk, activities)).map { i in
        [
            "id": .string("al\(i % 5 + 1).r\(i % 34 + 1).a\(i)"), "kind": "activity", "result": .string("al\(i % 5 + 1).r\(i % 34 + 1)"),
            "number": .int(Int64(i % 900 + 1)), "title": .string("Activiteit \(i): training en voorlichting"),
            "status": .string(statuses[i % 7]), "explanation": .string("Toelichting bij de stand van zaken \(i)."),
            "owner": "a", "partners": ["om", "comensha"], "due": "2026-12-31", "links": [.string("https://example.org/\(i)")],
        ]
    }
    _ = try await call(a, "POST", "/v1/import", ["records": .array(records)])
    print("  \(min(base + chunk, activities))/\(activities)")
}
print("loaded in \(fmt(now() - loadStart, 1)) s")
let aStatus = try await call(a, "GET", "/v1/status")
let fieldCount = Int(aStatus["fields"]?.intValue ?? 0)
let digestA = aStatus["digest"]!.stringValue!

// Merge-only, in process: the same commits from A's replica into an empty one.
let commitsOfA: [SignedCommit] = try DatabaseQueue(path: a.folder + "/replica.sqlite", configuration: {
    var c = Configuration()
    c.readonly = true
    return c
}()).read { db in
    try Row.fetchAll(db, sql: "SELECT body, sig FROM commits ORDER BY lsn").map {
        try SignedCommit(canonicalBytes: [UInt8]($0[0] as Data), signature: [UInt8]($0[1] as Data))
    }
}
let registryA = try PartnerRegistry(json: JSONParser.parse([UInt8](FileManager.default.contents(atPath: a.folder + "/registry.json")!)))
let mergeReplica = try Replica(configuration: ReplicaConfiguration(
    path: root + "/merge-only.sqlite", identity: NodeIdentity(), org: "b", registry: registryA))
let changeCount = commitsOfA.reduce(0) { $0 + $1.commit.changes.count }
let mergeStart = now()
for start in stride(from: 0, to: commitsOfA.count, by: 5000) {
    try mergeReplica.apply(Array(commitsOfA[start..<min(start + 5000, commitsOfA.count)]))
}
let mergeSeconds = now() - mergeStart
precondition(Hex.encode(mergeReplica.digestRoot) == digestA, "merge-only replica disagrees with A")
try mergeReplica.close()
let mergeRate = Double(changeCount) / mergeSeconds
print("merge-only: \(changeCount) changes in \(commitsOfA.count) commits, \(fmt(mergeSeconds, 2)) s, \(fmt(mergeRate)) changes/s")

// Initial sync: B joins and pulls everything over TLS.
let syncStart = now()
try start(b)
var lastReport = now()
while true {
    let status = try await call(b, "GET", "/v1/status")
    if status["digest"]?.stringValue == digestA { break }
    if now() - lastReport > 2 {
        print("  B has \(status["fields"]?.intValue ?? 0)/\(fieldCount) fields")
        lastReport = now()
    }
    if now() - syncStart > 600 { throw BenchError("initial sync did not finish in 600 s") }
    try await Task.sleep(for: .milliseconds(20))
}
let syncSeconds = now() - syncStart
let syncRate = Double(changeCount) / syncSeconds
print("initial sync: \(changeCount) changes in \(fmt(syncSeconds, 2)) s (from B's start until the digests match)")

// Propagation: status changes on A, seen in B's change stream.
final class EventReader: @unchecked Sendable {
    let fd: Int32
    var seen: [Int64: Double] = [:]  // A's seq → time seen
    let lock = NSLock()
    init(socketPath: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let bytes = Array(socketPath.utf8)
            for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard ok else { throw BenchError("cannot connect to \(socketPath)") }
        let request = Array("GET /v1/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n".utf8)
        _ = write(fd, request, request.count)
    }
    func run(origin: String) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { return }
            let t = now()
            buffer += chunk[0..<n]
            while let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                guard line.hasPrefix("data: "), let json = try? JSONParser.parse(String(line.dropFirst(6))),
                    json["origin"]?.stringValue == origin, let seq = json["seq"]?.intValue else { continue }
                lock.lock()
                seen[seq] = t
                lock.unlock()
            }
        }
    }
    func time(of seq: Int64) -> Double? {
        lock.lock()
        defer { lock.unlock() }
        return seen[seq]
    }
}
let reader = try EventReader(socketPath: b.folder + "/progsync.sock")
let originA = a.id
Thread.detachNewThread { reader.run(origin: originA) }
try await Task.sleep(for: .milliseconds(300))
var latencies: [Double] = []
for i in 0..<propagationChanges {
    let id = "al\(i % 5 + 1).r\(i % 34 + 1).a\(i)"
    let sent = now()
    let answer = try await call(a, "PATCH", "/v1/records/\(id)", ["status": .string(statuses[(i + 3) % 7])])
    guard let seq = answer["commit"]?["seq"]?.intValue else { throw BenchError("no commit in \(answer)") }
    while reader.time(of: seq) == nil {
        if now() - sent > 10 { throw BenchError("change \(i) did not reach B within 10 s") }
        usleep(100)
    }
    latencies.append((reader.time(of: seq)! - sent) * 1000)
}
print("propagation: \(latencies.count) status changes, p50 \(fmt(percentile(latencies, 0.5), 2)) ms, p99 \(fmt(percentile(latencies, 0.99), 2)) ms, max \(fmt(latencies.max() ?? 0, 2)) ms")
let initialSyncLine = "initial-sync: \(fmt(syncRate)) changes/s over TLS (merge-only \(fmt(mergeRate)) changes/s, ratio \(fmt(syncRate / mergeRate, 2)))"

// Reconciliation.
func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
func waitForEqualDigests() async throws {
    let deadline = now() + 60
    while now() < deadline {
        let da = try await call(a, "GET", "/v1/digest")["root"]?.stringValue
        if da != nil, da == (try await call(b, "GET", "/v1/digest")["root"]?.stringValue) { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw BenchError("A and B did not agree within 60 s")
}
func reconcileB() async throws -> (ms: Double, report: JSONValue) {
    let t = now()
    let report = try await call(b, "POST", "/v1/reconcile")
    let ms = (now() - t) * 1000
    guard report["verdict"]?.stringValue == "in agreement" else { throw BenchError("reconcile did not agree: \(report.prettyString())") }
    return (ms, report)
}
func rawScanMilliseconds(_ path: String) throws -> Double {
    var c = Configuration()
    c.readonly = true
    let queue = try DatabaseQueue(path: path, configuration: c)
    defer { try? queue.close() }
    let t = now()
    let bytes = try queue.read { db -> Int in
        var total = 0
        let rows = try Row.fetchCursor(db, sql: "SELECT record, field, stamp, origin, value FROM fields")
        while let row = try rows.next() { total += (row[0] as String).utf8.count + (row[4] as String).utf8.count }
        return total
    }
    precondition(bytes > 0)
    return (now() - t) * 1000
}
try await waitForEqualDigests()
var equalMs: [Double] = []
var anchorMs: [Double] = []
for _ in 0..<3 {
    let (ms, report) = try await reconcileB()
    equalMs.append(ms)
    anchorMs.append(try rawScanMilliseconds(b.folder + "/replica.sqlite"))
    print("  reconcile (equal): \(fmt(ms, 1)) ms, self-check of \(report["selfCheck"]?["fieldsChecked"]?.intValue ?? 0) fields")
}
print("reconcile equal: median \(fmt(median(equalMs), 1)) ms; anchor: raw SQLite scan of the same \(fieldCount) fields \(fmt(median(anchorMs), 1)) ms (ratio \(fmt(median(equalMs) / median(anchorMs), 2)))")

/// Stops B, changes one field in `modulo` behind its back, starts it, and times the
/// reconciliation that finds and repairs them, three times.
@MainActor func divergedRuns(_ label: String, modulo: Int) async throws -> [Double] {
    var times: [Double] = []
    for round in 0..<3 {
        let bProcess = children.last { $0.isRunning && $0.arguments?.contains(b.folder) == true }!
        kill(bProcess.processIdentifier, SIGTERM)
        bProcess.waitUntilExit()
        let changed = try await DatabaseQueue(path: b.folder + "/replica.sqlite").write { db -> Int in
            try db.execute(sql: "UPDATE fields SET value = '\"gewijzigd buiten progsyncd om \(label) \(round)\"' WHERE abs(random()) % \(modulo) = 0")
            return db.changesCount
        }
        try start(b)
        _ = try await call(b, "GET", "/v1/status")
        let (ms, report) = try await reconcileB()
        let repaired = report["selfCheck"]?["fieldsRepaired"]?.intValue ?? 0
        guard repaired == changed else { throw BenchError("changed \(changed) fields but the report repaired \(repaired)") }
        try await waitForEqualDigests()
        times.append(ms)
        print("    self-check: \(report["selfCheck"]?.canonicalString ?? "")")
        print("  reconcile (\(label) diverged): \(changed) of \(fieldCount) fields changed behind the daemon's back; detected and repaired in \(fmt(ms, 1)) ms")
    }
    return times
}
let divergedMs = try await divergedRuns("1%", modulo: 100)
let slightlyDivergedMs = try await divergedRuns("0.01%", modulo: 10_000)
print(initialSyncLine)
let equal = median(equalMs), diverged = median(divergedMs), slightly = median(slightlyDivergedMs)
print("reconcile: equal \(fmt(equal)) ms, 1% diverged \(fmt(diverged)) ms (\(fmt(diverged / equal, 1))x), 0.01% diverged \(fmt(slightly)) ms (\(fmt(slightly / equal, 1))x)")
