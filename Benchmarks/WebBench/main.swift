// The web app's server-side speed, through the daemon's socket mount (/ui) of real in-process
// nodes: the overview of the 2021 programme (161 records), and pages of a list of 100k activities.
// Prints:
//   web: overview p99 <X> ms, list page p99 <Y> ms (100k activities)
// (edit→partner page is measured in a real browser on two nodes: scripts/ui_test.py prints it.)
// Usage: swift run -c release ProgSyncWebBench [requests per measurement, default 300]
import Foundation
import Logging
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncHTTPClient
import ProgSyncStore

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

    func login(admin: HTTPClient) async throws {
        let body = Array(#"{"name":"bench","role":"viewer","password":"a long bench password"}"#.utf8)
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
    print("web: overview p99 \(String(format: "%.1f", overview)) ms, list page p99 \(String(format: "%.1f", listPage)) ms (100k activities)")
}

try await runBench()
