import Foundation
import ProgSyncCore
import ProgSyncHTTPClient
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

// End-to-end harness: the real `progsyncd` as a child process on a temporary data folder, driven
// through its Unix socket (with ProgSyncHTTPClient, the real curl) and through the real `progsync`.

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The built executables, found next to the test binary.
enum Binaries {
    static func locate(_ name: String) -> String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // The test binary may sit inside an .xctest bundle on some layouts.
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return exe.deletingLastPathComponent().appendingPathComponent(name).path
    }

    static let progsyncd = locate("progsyncd")
    static let progsync = locate("progsync")
    static let curl = ["/usr/bin/curl", "/bin/curl", "/usr/local/bin/curl"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    } ?? "curl"

    /// The environment for child processes: the test runner's, without any PROGSYNC_* setting.
    static func cleanEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PROGSYNC_") }
        env["COLUMNS"] = "200"
        for (k, v) in extra { env[k] = v }
        return env
    }
}

/// One answer of the daemon.
struct Reply: Sendable, CustomStringConvertible {
    var status: Int
    var headers: [HTTPHeader]
    var body: [UInt8]
    /// The parsed body, or `.null` when it is not JSON.
    var json: JSONValue

    var text: String { String(decoding: body, as: UTF8.self) }
    var contentType: String { headers.first { $0.name == "content-type" }?.value ?? "" }
    var description: String { "HTTP \(status) \(text.prefix(400))" }

    /// The body is the daemon's error shape: `{"error": code, "message": text}`, both non-empty.
    var isErrorShape: Bool {
        guard let error = json["error"]?.stringValue, let message = json["message"]?.stringValue else { return false }
        return !error.isEmpty && !message.isEmpty
    }
}

/// What a finished child process left behind.
struct ProcessResult: Sendable, CustomStringConvertible {
    var exitCode: Int32
    /// True when the process ended by a signal (then exitCode is the signal number).
    var signalled: Bool
    var stdout: String
    var stderr: String
    var stdoutBytes: [UInt8]

    var description: String {
        "exit \(signalled ? "signal " : "")\(exitCode)\nstdout: \(stdout.prefix(2000))\nstderr: \(stderr.prefix(2000))"
    }
}

/// Runs a child process to its end (async, without blocking a thread), with stdout and stderr
/// captured through files. Killed after `timeout` seconds.
func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
    currentDirectory: String? = nil, stdin: [UInt8]? = nil, timeout: Double = 60
) async throws -> ProcessResult {
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let outURL = scratch.appendingPathComponent("out"), errURL = scratch.appendingPathComponent("err")
    FileManager.default.createFile(atPath: outURL.path, contents: nil)
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
    defer {
        try? out.close()
        try? err.close()
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = environment ?? Binaries.cleanEnvironment()
    if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    process.standardOutput = out
    process.standardError = err
    if let stdin {
        let inURL = scratch.appendingPathComponent("in")
        FileManager.default.createFile(atPath: inURL.path, contents: Data(stdin))
        process.standardInput = try FileHandle(forReadingFrom: inURL)
    } else {
        process.standardInput = FileHandle.nullDevice
    }
    try process.run()
    defer { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning {
        if Date() > deadline {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw HarnessError("\(executable) \(arguments.joined(separator: " ")) did not finish in \(timeout) s")
        }
        try await Task.sleep(for: .milliseconds(10))
    }
    process.waitUntilExit()
    let outBytes = [UInt8]((try? Data(contentsOf: outURL)) ?? Data())
    let errBytes = [UInt8]((try? Data(contentsOf: errURL)) ?? Data())
    return ProcessResult(
        exitCode: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal,
        stdout: String(decoding: outBytes, as: UTF8.self), stderr: String(decoding: errBytes, as: UTF8.self),
        stdoutBytes: outBytes)
}

/// A `progsyncd` child process on its own temporary data folder.
final class DaemonHarness: @unchecked Sendable {
    /// The daemon of the surrounding suite (see ``SharedDaemonTrait``).
    @TaskLocal static var shared: DaemonHarness?

    /// The temporary folder holding everything of this harness; removed by ``cleanup()``.
    let folder: URL
    let dataDir: String
    let socketPath: String
    let empty: Bool
    /// Replaces the daemon's arguments when set (the zero-config start runs with none).
    let argumentsOverride: [String]?
    let workingDirectory: String?
    /// Extra environment for the daemon (PROGSYNC_* settings).
    let environment: [String: String]
    let logPath: String
    let client: HTTPClient

    private let lock = NSLock()
    private var _process: Process?
    private var logHandle: FileHandle?

    var process: Process? { lock.withLock { _process } }
    var pid: Int32? { process?.processIdentifier }
    var isRunning: Bool { process?.isRunning ?? false }

    /// A harness on a new temporary folder; call ``start()`` (or use ``started(empty:)``).
    init(empty: Bool = false, dataDir: String? = nil, arguments: [String]? = nil, workingDirectory: String? = nil,
         socketPath: String? = nil, environment: [String: String] = [:]) throws {
        // Short names: Unix socket paths are limited to ~108 bytes.
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-\(UUID().uuidString.prefix(13))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        self.dataDir = dataDir ?? folder.appendingPathComponent("data").path
        self.socketPath = socketPath ?? self.dataDir + "/progsync.sock"
        self.empty = empty
        argumentsOverride = arguments
        self.workingDirectory = workingDirectory
        self.environment = environment
        logPath = folder.appendingPathComponent("daemon.log").path
        client = try HTTPClient(configuration: HTTPClientConfiguration(
            unixSocketPath: self.socketPath, connectTimeout: .seconds(2), requestTimeout: .seconds(120),
            maxResponseBytes: 256 << 20))
    }

    /// Starts a daemon on a fresh folder and waits until it answers.
    static func started(empty: Bool = false, environment: [String: String] = [:]) async throws -> DaemonHarness {
        let harness = try DaemonHarness(empty: empty, environment: environment)
        do {
            try await harness.start()
        } catch {
            harness.cleanup()
            throw error
        }
        return harness
    }

    deinit {
        client.shutdown()
    }

    var arguments: [String] {
        argumentsOverride ?? (["--data-dir", dataDir, "--log-level", "warning"] + (empty ? ["--empty"] : []))
    }

    /// Launches the child process without waiting for it to be ready.
    @discardableResult
    func launch() throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.progsyncd)
        process.arguments = arguments
        process.environment = Binaries.cleanEnvironment(environment)
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        lock.withLock {
            try? logHandle?.close()
            logHandle = log
            _process = process
        }
        return process
    }

    /// Launches the daemon and waits until `GET /v1/status` answers 200.
    func start(timeout: Double = 20) async throws {
        try launch()
        try await waitUntilReady(timeout: timeout)
    }

    func waitUntilReady(timeout: Double = 20) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let process, !process.isRunning {
                throw HarnessError("progsyncd exited (status \(process.terminationStatus)) before it was ready:\n\(log)")
            }
            if FileManager.default.fileExists(atPath: socketPath),
                let reply = try? await request("GET", "/v1/status"), reply.status == 200
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError("progsyncd did not answer on \(socketPath) within \(timeout) s:\n\(log)")
    }

    /// The daemon's output so far.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    // MARK: Requests

    func request(_ method: String, _ path: String, body: JSONValue? = nil, timeout: Duration? = nil) async throws -> Reply {
        try await request(method, path, rawBody: body?.canonicalBytes, timeout: timeout)
    }

    func request(
        _ method: String, _ path: String, rawBody: [UInt8]?, contentType: String? = "application/json",
        timeout: Duration? = nil
    ) async throws -> Reply {
        var headers = [HTTPHeader("Accept", "application/json")]
        if rawBody != nil, let contentType { headers.append(HTTPHeader("Content-Type", contentType)) }
        let response = try await client.send(HTTPClientRequest(
            method: method, url: "http://localhost" + path, headers: headers, body: rawBody, timeout: timeout))
        let json = (try? JSONParser.parse(response.body, maxDepth: 512)) ?? .null
        return Reply(status: response.status, headers: response.headers, body: response.body, json: json)
    }

    /// GET that must answer 200; returns the JSON.
    func get(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> JSONValue {
        let reply = try await request("GET", path)
        #expect(reply.status == 200, "GET \(path): \(reply)", sourceLocation: sourceLocation)
        return reply.json
    }

    /// The replica digest root.
    func digestRoot() async throws -> String {
        let reply = try await request("GET", "/v1/digest")
        guard reply.status == 200, let root = reply.json["root"]?.stringValue else {
            throw HarnessError("GET /v1/digest: \(reply)")
        }
        return root
    }

    /// `total` of `GET /v1/records?<query>&limit=1`.
    func count(_ query: String) async throws -> Int {
        let reply = try await request("GET", "/v1/records?" + query + (query.isEmpty ? "" : "&") + "limit=1")
        guard reply.status == 200, let total = reply.json["total"]?.intValue else {
            throw HarnessError("GET /v1/records?\(query): \(reply)")
        }
        return Int(total)
    }

    // MARK: The CLI

    /// Runs the real `progsync` with PROGSYNC_SOCKET pointing at this daemon.
    func runCLI(_ args: [String], environment extra: [String: String] = [:], stdin: [UInt8]? = nil, timeout: Double = 60)
        async throws -> ProcessResult
    {
        var env = ["PROGSYNC_SOCKET": socketPath]
        for (k, v) in extra { env[k] = v }
        return try await runProcess(
            Binaries.progsync, args, environment: Binaries.cleanEnvironment(env), currentDirectory: folder.path,
            stdin: stdin, timeout: timeout)
    }

    // MARK: Stopping

    /// Sends `signal` and waits for the process to end; returns its termination status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeout: Double = 20) async throws -> (status: Int32, signalled: Bool) {
        guard let process else { throw HarnessError("progsyncd was never started") }
        if process.isRunning { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw HarnessError("progsyncd did not stop within \(timeout) s of signal \(signal):\n\(log)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        process.waitUntilExit()
        return (process.terminationStatus, process.terminationReason == .uncaughtSignal)
    }

    /// SIGKILL, and wait for the process to be gone.
    func kill9() {
        guard let process else { return }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Kills the daemon if it still runs and removes the temporary folder.
    func cleanup() {
        kill9()
        client.shutdown()
        lock.withLock {
            try? logHandle?.close()
            logHandle = nil
        }
        try? FileManager.default.removeItem(at: folder)
    }
}

/// `@Suite(.sharedDaemon())`: one daemon for the whole suite, started before its first test and
/// killed (and its folder removed) after its last; tests reach it as `DaemonHarness.shared`.
struct SharedDaemonTrait: SuiteTrait, TestScoping {
    let empty: Bool

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let harness = try await DaemonHarness.started(empty: empty)
        defer { harness.cleanup() }
        try await DaemonHarness.$shared.withValue(harness) {
            try await function()
        }
    }
}

extension Trait where Self == SharedDaemonTrait {
    static func sharedDaemon(empty: Bool = false) -> Self { SharedDaemonTrait(empty: empty) }
}

/// The daemon of the surrounding suite.
func sharedDaemon(sourceLocation: SourceLocation = #_sourceLocation) throws -> DaemonHarness {
    try #require(DaemonHarness.shared, "no shared daemon: the suite needs .sharedDaemon()", sourceLocation: sourceLocation)
}

/// The repository root, from this file's path.
let repositoryRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The bundled 2021 programme, as the daemon loads it (records without an owner get the node's org).
enum Sample {
    static let records: [JSONValue] = {
        let url = repositoryRoot.appendingPathComponent("Sources/ProgSyncDaemon/Resources/programme-2021.json")
        guard let data = FileManager.default.contents(atPath: url.path),
            let json = try? JSONParser.parse([UInt8](data)), let list = json["records"]?.arrayValue
        else { return [] }
        return list
    }()

    static func count(where predicate: (JSONValue) -> Bool) -> Int { records.filter(predicate).count }
}

/// An activity record for imports: `{"id", "kind": "activity", "result", "number", "title"}`.
func activity(_ id: String, result: String, number: Int, title: String? = nil) -> JSONValue {
    .object([
        "id": .string(id), "kind": "activity", "result": .string(result), "number": .int(Int64(number)),
        "title": .string(title ?? "Activiteit \(id)"),
    ])
}

/// Waits until `condition` holds, polling every 20 ms; false on timeout.
func eventually(timeout: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

extension JSONValue {
    /// `self[key]` for an array of objects: the values of `key` as strings.
    func strings(_ key: String) -> [String] {
        (arrayValue ?? []).compactMap { $0[key]?.stringValue }
    }
}
