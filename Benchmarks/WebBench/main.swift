// The web app's server-side speed, through the daemon's socket mount (/ui) of real in-process
// nodes: the overview of the 2021 programme (161 records), and pages of a list of 100k activities.
// Then edit→partner page: two progsyncd processes (jenv with the programme, politie) replicating
// over mutual TLS on loopback; an editor saves a status in jenv's app, and the time is taken
// until politie's app sends it on the event stream its open pages listen to (/ui/events).
// Prints:
//   web: overview p99 <X> ms, list page p99 <Y> ms (100k activities), edit→partner page <Z> ms
// (Z is the median of 40 saves; scripts/ui_test.py measures the same in a real browser.)
// Usage: swift build -c release --product progsyncd && swift run -c release ProgSyncWebBench [requests per measurement, default 300]
import Foundation
import Logging
import ProgSyncBenchSupport
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncHTTPClient
import ProgSyncStore

#if canImport(Glibc)
import Glibc
#endif

let requests = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 300

func say(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }

/// A session on a node's socket: cookie kept by hand, as a browser would.
final class Session: @unchecked Sendable {
    let client: HTTPClient
    var cookie = ""

    init(socket: String) throws {
        client = try HTTPClient(configuration: HTTPClientConfiguration(unixSocketPath: socket, requestTimeout: .seconds(60)))
    }

    func send(_ method: String, _ path: String, form: String? = nil) async throws -> (Int, String) {
        var request = HTTPClientRequest(method: method, url: "http://localhost" + path, body: form.map { Array($0.utf8) })
        if !cookie.isEmpty { request.addHeader("Cookie", cookie) }
        if form != nil { request.addHeader("Content-Type", "application/x-www-form-urlencoded") }
        let response = try await client.send(request)
        for header in response.headers(named: "set-cookie") where header.hasPrefix("progsync_session=") {
            cookie = String(header.prefix { $0 != ";" })
        }
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    func login(admin: HTTPClient, role: String = "viewer") async throws {
        let body = Array(#"{"name":"bench","role":"\#(role)","password":"a long bench password"}"#.utf8)
        _ = try await admin.send(HTTPClientRequest(method: "POST", url: "http://localhost/v1/users", body: body))
        let page = try await send("GET", "/ui/login").1
        let csrf = page.range(of: "name=\"_csrf\" value=\"").map { String(page[$0.upperBound...].prefix { $0 != "\"" }) } ?? ""
        let (status, _) = try await send("POST", "/ui/login", form: "_csrf=\(csrf)&name=bench&password=a+long+bench+password")
        guard status == 303 else { fatalError("login failed: \(status)") }
    }
}

func startNode(sample: Bool) async throws -> (Daemon, Task<Void, any Error>, String, URL) {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("psweb-bench-\(UUID().uuidString.prefix(8))")
    var configuration = DaemonConfiguration(dataDirectory: folder.appendingPathComponent("data").path)
    configuration.loadSampleData = sample
    configuration.reconcileSchedule = ReconcileSchedule("off")!
    var logger = Logger(label: "web-bench")
    logger.logLevel = .warning
    let daemon = try buildDaemon(configuration: configuration, logger: logger)
    let run = Task { try await daemon.run() }
    let probe = try HTTPClient(configuration: HTTPClientConfiguration(unixSocketPath: configuration.socketPath, requestTimeout: .seconds(5)))
    defer { probe.shutdown() }
    for _ in 0..<200 {
        if (try? await probe.send(HTTPClientRequest(method: "GET", url: "http://localhost/v1/status")))?.status == 200 { break }
        try await Task.sleep(for: .milliseconds(100))
    }
    return (daemon, run, configuration.socketPath, folder)
}

/// Milliseconds per request, p99 over `requests` requests after a warm-up.
func p99(_ session: Session, paths: (Int) -> String) async throws -> Double {
    for i in 0..<10 { _ = try await session.send("GET", paths(i)) }
    var times: [Double] = []
    for i in 0..<requests {
        let start = ContinuousClock.now
        let (status, _) = try await session.send("GET", paths(i))
        guard status == 200 else { fatalError("GET \(paths(i)): \(status)") }
        let d = ContinuousClock.now - start
        times.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
    }
    times.sort()
    return times[min(times.count - 1, Int(Double(times.count) * 0.99))]
}

func runBench() async throws {
    // The 2021 programme: all 122 activities on one page, with the legend's counts.
    let (_, run1, socket1, folder1) = try await startNode(sample: true)
    let admin1 = try HTTPClient(configuration: HTTPClientConfiguration(unixSocketPath: socket1, requestTimeout: .seconds(30)))
    let session1 = try Session(socket: socket1)
    try await session1.login(admin: admin1)
    let overview = try await p99(session1) { _ in "/ui/" }
    say("overview of the 2021 programme: p99 \(String(format: "%.2f", overview)) ms over \(requests) requests")
    run1.cancel()
    admin1.shutdown()

    // 100k activities under 1000 results: pages of 200 anywhere in the list.
    let (daemon2, run2, socket2, folder2) = try await startNode(sample: false)
    say("writing 100k activities…")
    var batch: [[FieldWrite]] = []
    var commit: [FieldWrite] = []
    func add(_ record: String, _ fields: [String: JSONValue]) {
        for (field, value) in fields { commit.append(FieldWrite(record: record, field: field, value: value)) }
        if commit.count >= 2000 {
            batch.append(commit)
            commit = []
        }
    }
    add("al1", ["kind": "action-line", "number": 1, "title": "Bench", "owner": "jenv"])
    for r in 0..<1000 {
        let result = String(format: "al1.r%04d", r)
        add(result, ["kind": "result", "actionLine": "al1", "number": .int(Int64(r + 1)), "title": .string("Resultaat \(r)"), "owner": "jenv"])
        for a in 0..<100 {
            let status = ProgrammeStatus.allCases[(r + a) % ProgrammeStatus.allCases.count].rawValue
            add(result + String(format: ".a%03d", a), [
                "kind": "activity", "result": .string(result), "number": .int(Int64(a + 1)), "title": .string("Activiteit \(r)-\(a)"),
                "status": .string(status), "owner": "jenv", "partners": ["politie"],
            ])
        }
        if batch.count >= 50 {
            _ = try daemon2.replica.commitLocalBatch(author: "bench", commits: batch)
            batch = []
        }
    }
    batch.append(commit)
    _ = try daemon2.replica.commitLocalBatch(author: "bench", commits: batch)
    let admin2 = try HTTPClient(configuration: HTTPClientConfiguration(unixSocketPath: socket2, requestTimeout: .seconds(30)))
    let session2 = try Session(socket: socket2)
    try await session2.login(admin: admin2)
    let pages = 100_000 / 200
    let listPage = try await p99(session2) { i in "/ui/?page=\((i * 7919) % pages + 1)" }
    say("list page of 200 out of 100k activities: p99 \(String(format: "%.2f", listPage)) ms over \(requests) requests")
    // The list is kept until the next commit: a page asked right after a change pays for the
    // whole filter again. Measured by itself, with a status change before each page.
    var afterChange: [Double] = []
    for i in 0..<20 {
        let status = ProgrammeStatus.allCases[i % ProgrammeStatus.allCases.count].rawValue
        _ = try daemon2.replica.commitLocal(author: "bench", writes: [FieldWrite(record: "al1.r0000.a000", field: "status", value: .string(status))])
        let start = ContinuousClock.now
        let (status2, _) = try await session2.send("GET", "/ui/?page=\((i * 7919) % pages + 1)")
        guard status2 == 200 else { fatalError("list page after a change: \(status2)") }
        let d = ContinuousClock.now - start
        afterChange.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
    }
    afterChange.sort()
    say("list page right after a change (list read again): median \(String(format: "%.1f", afterChange[afterChange.count / 2])) ms, "
        + "max \(String(format: "%.1f", afterChange.last!)) ms over 20")
    run2.cancel()
    admin2.shutdown()
    try? FileManager.default.removeItem(at: folder1)
    try? FileManager.default.removeItem(at: folder2)
    let edit = try await editToPartnerPage()
    say("edit→partner page: median \(String(format: "%.1f", edit.median)) ms, p99 \(String(format: "%.1f", edit.p99)) ms over \(edit.count) saves")
    print("web: overview p99 \(String(format: "%.1f", overview)) ms, list page p99 \(String(format: "%.1f", listPage)) ms (100k activities), "
        + "edit→partner page \(String(format: "%.0f", edit.median)) ms")
}

// MARK: Edit on one node's app, seen by a partner's open page

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = text }
}

/// A progsyncd process of its own, next to this benchmark's binary.
final class NodeProcess {
    let name: String, org: String, folder: String, peerPort: Int
    var id = "", publicKey = "", pin = ""
    var process: Process?
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("progsyncd").path
    var socket: String { folder + "/progsync.sock" }

    init(name: String, org: String, root: String) throws {
        (self.name, self.org, folder) = (name, org, root + "/" + name)
        peerPort = freeLoopbackPort()
        let out = try output(of: Self.binary, ["init", "--data-dir", folder, "--org", org, "--name", name])
        let identity = try JSONParser.parse([UInt8](FileManager.default.contents(atPath: folder + "/identity.json") ?? Data()))
        id = identity["id"]?.stringValue ?? ""
        publicKey = identity["publicKey"]?.stringValue ?? ""
        pin = out.split(separator: "\n").first { $0.hasPrefix("certificate:") }
            .map { $0.dropFirst("certificate:".count).trimmingCharacters(in: .whitespaces) } ?? ""
        guard !id.isEmpty, !pin.isEmpty else { throw BenchFailure("progsyncd init for \(name) said: \(out)") }
    }

    func start(partners: [NodeProcess], sample: Bool) throws {
        let orgs: [JSONValue] = partners.map { n in
            .object(["code": .string(n.org), "nodes": [.object([
                "id": .string(n.id), "name": .string(n.name), "publicKey": .string(n.publicKey), "certificatePin": .string(n.pin),
                "address": .string("https://127.0.0.1:\(n.peerPort)"),
            ])]])
        }
        try JSONValue.object(["coordinators": ["jenv"], "orgs": .array(orgs)]).prettyString()
            .write(toFile: folder + "/registry.json", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["--data-dir", folder, "--log-level", "warning"] + (sample ? [] : ["--empty"])
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PROGSYNC_") }
        env["PROGSYNC_PEERS_LISTEN"] = "127.0.0.1:\(peerPort)"
        env["PROGSYNC_RECONCILE_SCHEDULE"] = "off"
        p.environment = env
        FileManager.default.createFile(atPath: folder + "/daemon.log", contents: nil)
        p.standardError = FileHandle(forWritingAtPath: folder + "/daemon.log")
        try p.run()
        process = p
    }

    func stop() {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        p.waitUntilExit()
    }
}

/// The event stream an open page listens to, read on a thread of its own: when each
/// `record=status` first arrived.
final class PageEventStream: @unchecked Sendable {
    let fd: Int32
    private let lock = NSLock()
    private var arrivals: [String: ContinuousClock.Instant] = [:]

    init(socket path: String, cookie: String) throws {
        fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard connected else { throw BenchFailure("cannot connect to \(path)") }
        let request = Array("GET /ui/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nCookie: \(cookie)\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw BenchFailure("cannot ask for /ui/events") }
        Thread.detachNewThread { self.read() }
    }

    private func read() {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n <= 0 { return }
            let now = ContinuousClock.now
            buffer += chunk[0..<n]
            while let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                guard line.hasPrefix("data: "), let event = try? JSONParser.parse(String(line.dropFirst(6))) else { continue }
                lock.lock()
                for change in event["changes"]?.arrayValue ?? [] where change["field"]?.stringValue == "status" {
                    let key = (change["record"]?.stringValue ?? "") + "=" + (change["value"]?.stringValue ?? "")
                    if arrivals[key] == nil { arrivals[key] = now }
                }
                lock.unlock()
            }
        }
    }

    func arrival(record: String, status: String) -> ContinuousClock.Instant? {
        lock.lock()
        defer { lock.unlock() }
        return arrivals[record + "=" + status]
    }

    deinit { close(fd) }
}

func hiddenValue(_ name: String, in page: String) -> String? {
    page.range(of: "name=\"\(name)\" value=\"").map { String(page[$0.upperBound...].prefix { $0 != "\"" }) }
}

func milliseconds(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }

func editToPartnerPage(saves: Int = 40) async throws -> (median: Double, p99: Double, count: Int) {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("psweb-edit-\(UUID().uuidString.prefix(8))").path
    defer { try? FileManager.default.removeItem(atPath: root) }
    let jenv = try NodeProcess(name: "jenv-node", org: "jenv", root: root)
    let politie = try NodeProcess(name: "politie-node", org: "politie", root: root)
    defer { jenv.stop(); politie.stop() }
    try jenv.start(partners: [jenv, politie], sample: true)
    try politie.start(partners: [jenv, politie], sample: false)
    let adminA = try HTTPClient(configuration: HTTPClientConfiguration(unixSocketPath: jenv.socket, requestTimeout: .seconds(30)))
    let adminB = try HTTPClient(configuration: HTTPClientConfiguration(unixSocketPath: politie.socket, requestTimeout: .seconds(30)))
    defer { adminA.shutdown(); adminB.shutdown() }
    // Until politie holds the programme.
    var records = 0
    for _ in 0..<600 where records < 161 {
        try await Task.sleep(for: .milliseconds(100))
        let status = try? await adminB.send(HTTPClientRequest(method: "GET", url: "http://localhost/v1/status"))
        records = status.flatMap { try? JSONParser.parse($0.body) }?["records"]?["total"]?.intValue.map(Int.init) ?? 0
    }
    guard records >= 161 else { throw BenchFailure("politie did not receive the programme (\(records) records)") }

    let editor = try Session(socket: jenv.socket)
    try await editor.login(admin: adminA, role: "editor")
    let reader = try Session(socket: politie.socket)
    try await reader.login(admin: adminB, role: "viewer")
    let stream = try PageEventStream(socket: politie.socket, cookie: reader.cookie)
    try await Task.sleep(for: .milliseconds(300))

    let activities = ["al1.r01.a01", "al1.r04.a08", "al2.r15.a02", "al3.r24.a07"]
    let statuses = ProgrammeStatus.allCases.map(\.rawValue)
    var times: [Double] = []
    for i in 0..<saves {
        let record = activities[i % activities.count]
        let page = try await editor.send("GET", "/ui/activities/\(record)").1
        // A status other than the one it has (saving the same value makes no commit).
        let form = page.range(of: "id=\"e-status\"").map { String(page[$0.lowerBound...].prefix(4000)) } ?? ""
        let current = statuses.first { form.contains("value=\"\($0)\" selected") }
        let choices: [String] = [statuses[i % statuses.count], statuses[(i + 1) % statuses.count]]
        let status = choices.first { $0 != current } ?? choices[0]
        guard let csrf = hiddenValue("_csrf", in: page), let base = hiddenValue("base.status", in: page) else {
            throw BenchFailure("no edit form on \(record)")
        }
        let start = ContinuousClock.now
        let (code, _) = try await editor.send("POST", "/ui/activities/\(record)", form: "_csrf=\(csrf)&status=\(status)&base.status=\(base)")
        guard code == 303 else { throw BenchFailure("saving \(record) answered \(code)") }
        while stream.arrival(record: record, status: status) == nil {
            if ContinuousClock.now - start > .seconds(10) { throw BenchFailure("\(record)=\(status) did not reach politie's page in 10 s") }
            try await Task.sleep(for: .microseconds(200))
        }
        times.append(milliseconds(stream.arrival(record: record, status: status)! - start))
    }
    times.sort()
    return (times[times.count / 2], times[min(times.count - 1, Int(Double(times.count) * 0.99))], times.count)
}

try await runBench()
