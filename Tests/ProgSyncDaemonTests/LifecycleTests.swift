import Foundation
import ProgSyncCore
import Testing

#if canImport(Glibc)
import Glibc
#endif
#if canImport(CoreFoundation)
// `struct stat` can be owned by CoreFoundation's module map, depending on build order.
import CoreFoundation
#endif

/// Starting, stopping and the data folder: each test runs its own daemon.
@Suite(.serialized)
struct LifecycleTests {
    @Test func binariesAreBuilt() {
        #expect(FileManager.default.isExecutableFile(atPath: Binaries.progsyncd), "missing \(Binaries.progsyncd); build all targets first")
        #expect(FileManager.default.isExecutableFile(atPath: Binaries.progsync), "missing \(Binaries.progsync)")
        #expect(FileManager.default.isExecutableFile(atPath: Binaries.curl), "missing curl")
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func signalStopsCleanly(signal: Int32) async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        #expect(FileManager.default.fileExists(atPath: d.socketPath))
        let write = try await d.request("PUT", "/v1/records/e2e.sig", body: ["kind": "action-line", "number": 9, "title": "Blijft"])
        #expect(write.status == 201)
        let (status, signalled) = try await d.stop(signal: signal)
        #expect(!signalled && status == 0, "signal \(signal): exit \(signalled ? "by signal " : "")\(status)\n\(d.log)")
        #expect(!FileManager.default.fileExists(atPath: d.socketPath), "the socket file is left behind after signal \(signal)")
        // What was acknowledged survives the stop.
        try await d.start()
        let record = try await d.get("/v1/records/e2e.sig")
        #expect(record["fields"]?["title"]?.stringValue == "Blijft")
    }

    @Test func signalStopsWithAnOpenEventStream() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: Binaries.curl)
        curl.arguments = ["-sS", "-N", "--unix-socket", d.socketPath, "http://localhost/v1/events"]
        curl.standardOutput = FileHandle.nullDevice
        curl.standardError = FileHandle.nullDevice
        try curl.run()
        defer {
            if curl.isRunning { kill(curl.processIdentifier, SIGKILL) }
            curl.waitUntilExit()
        }
        try await Task.sleep(for: .milliseconds(300))
        let (status, signalled) = try await d.stop(signal: SIGTERM, timeout: 15)
        #expect(!signalled && status == 0, "exit \(status)\n\(d.log)")
    }

    @Test func secondInstanceRefusesTheSameFolder() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        let second = try await runProcess(Binaries.progsyncd, ["--data-dir", d.dataDir, "--empty"], timeout: 20)
        #expect(!second.signalled && second.exitCode != 0, "\(second)")
        #expect(second.stderr.contains("already running"), "\(second)")
        #expect(second.stderr.contains("\(d.pid ?? -1)"), "the message names the running daemon's pid: \(second.stderr)")
        // The first daemon is unharmed: still running, socket still there, still answering.
        #expect(d.isRunning)
        #expect(FileManager.default.fileExists(atPath: d.socketPath))
        #expect(try await d.request("GET", "/v1/status").status == 200)
        // A second daemon on another socket but the same folder is refused as well.
        let otherSocket = d.folder.appendingPathComponent("other.sock").path
        let third = try await runProcess(Binaries.progsyncd, ["--data-dir", d.dataDir, "--socket", otherSocket], timeout: 20)
        #expect(third.exitCode != 0 && third.stderr.contains("already running"), "\(third)")
        #expect(!FileManager.default.fileExists(atPath: otherSocket))
    }

    /// Integer keys are range-checked at start, naming the range, instead of overflowing later
    /// (a huge `reconcile.keep-days` trapped in the report pruning).
    @Test func outOfRangeIntegerKeysAreRefusedAtStart() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-config-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (key, value) in [("reconcile.keep-days", "9223372036854775807"), ("reconcile.keep-days", "0"),
                             ("clock.max-offset-seconds", "9223372036854775807"), ("limits.max-json-depth", "100000000"),
                             ("limits.max-body-bytes", "-1"), ("limits.max-import-bytes", "9223372036854775807"),
                             ("limits.max-page-size", "0")] {
            let variable = "PROGSYNC_" + key.uppercased().replacingOccurrences(of: ".", with: "_").replacingOccurrences(of: "-", with: "_")
            let result = try await runProcess(Binaries.progsyncd, ["--data-dir", folder, "--empty"],
                                              environment: Binaries.cleanEnvironment([variable: value]), timeout: 15)
            #expect(!result.signalled && result.exitCode != 0 && result.stderr.contains("\(key) must be from"), "\(variable)=\(value): \(result)")
        }
    }

    @Test func socketIsGroupReadWriteOnly() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        var info = stat()
        #expect(lstat(d.socketPath, &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFSOCK, "not a socket")
        #expect(info.st_mode & 0o7777 == 0o660, "socket mode is \(String(info.st_mode & 0o7777, radix: 8)), not 660")
        var folder = stat()
        #expect(stat(d.dataDir, &folder) == 0)
        #expect(folder.st_mode & 0o077 == 0, "data folder mode \(String(folder.st_mode & 0o7777, radix: 8)) lets others in")
        var identity = stat()
        #expect(stat(d.dataDir + "/identity.json", &identity) == 0)
        #expect(identity.st_mode & 0o7777 == 0o600, "identity.json mode \(String(identity.st_mode & 0o7777, radix: 8))")
    }

    @Test func zeroConfigStartLoadsThe2021Programme() async throws {
        // No arguments at all: ./progsync-data in the working directory.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-zero-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let d = try DaemonHarness(
            dataDir: folder.appendingPathComponent("progsync-data").path, arguments: [], workingDirectory: folder.path)
        defer {
            d.cleanup()
            try? FileManager.default.removeItem(at: folder)
        }
        try await d.start()
        let status = try await d.get("/v1/status")
        let records = status["records"]
        #expect(records?["action-line"]?.intValue == 5)
        #expect(records?["result"]?.intValue == 34)
        #expect(records?["activity"]?.intValue == 122)
        #expect(records?["total"]?.intValue == 161)
        #expect(records?["deleted"]?.intValue == 0)
        #expect(status["org"]?.stringValue == "jenv")
        #expect(FileManager.default.fileExists(atPath: folder.path + "/progsync-data/identity.json"))
        #expect(FileManager.default.fileExists(atPath: folder.path + "/progsync-data/registry.json"))
        #expect(try await d.count("") == 161)
        #expect(try await d.count("kind=activity") == 122)

        // A restart keeps the identity and does not load the sample a second time.
        let node = status["node"]
        let digest = status["digest"]
        let (code, _) = try await d.stop()
        #expect(code == 0)
        try await d.start()
        let again = try await d.get("/v1/status")
        #expect(again["node"] == node)
        #expect(again["records"]?["total"]?.intValue == 161)
        #expect(again["digest"] == digest)
    }

    @Test func emptyStartsEmpty() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        let status = try await d.get("/v1/status")
        #expect(status["records"]?["total"]?.intValue == 0)
        #expect(status["versionVector"]?.objectValue?.isEmpty == true)
        let list = try await d.get("/v1/records")
        #expect(list["records"] == [] && list["total"]?.intValue == 0)
        let digest = try await d.get("/v1/digest")
        #expect(digest["fields"]?.intValue == 0)
        #expect(digest["inner"]?.arrayValue?.count == 64)
    }

    @Test func initPrintsTheIdentityAndRefusesToOverwrite() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-init-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        let data = folder.appendingPathComponent("node").path
        let first = try await runProcess(Binaries.progsyncd, ["init", "--data-dir", data, "--org", "politie", "--name", "x"])
        #expect(first.exitCode == 0, "\(first)")
        let lines = first.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let node = lines.first { $0.hasPrefix("node:") }.map { $0.dropFirst(5).trimmingCharacters(in: .whitespaces) }
        let publicKey = lines.first { $0.hasPrefix("public key:") }.map { $0.dropFirst(11).trimmingCharacters(in: .whitespaces) }
        #expect(node?.count == 16, "\(first.stdout)")
        #expect((publicKey?.count ?? 0) >= 43, "\(first.stdout)")
        #expect(lines.contains { $0.hasPrefix("org:") && $0.hasSuffix("politie") }, "\(first.stdout)")
        #expect(lines.contains { $0.hasPrefix("name:") && $0.hasSuffix("x") }, "\(first.stdout)")
        let identityPath = data + "/identity.json"
        let identity = try Data(contentsOf: URL(fileURLWithPath: identityPath))
        let stored = try JSONParser.parse([UInt8](identity))
        #expect(stored["id"]?.stringValue == node)
        #expect(stored["publicKey"]?.stringValue == publicKey)
        #expect(stored["org"]?.stringValue == "politie")
        #expect(!first.stdout.contains(stored["privateKey"]?.stringValue ?? "-"), "init printed the private key")

        let second = try await runProcess(Binaries.progsyncd, ["init", "--data-dir", data, "--org", "om"])
        #expect(second.exitCode != 0, "\(second)")
        #expect(second.stderr.contains("already exists"), "\(second)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: identityPath)) == identity, "init overwrote the identity")

        let badOrg = try await runProcess(Binaries.progsyncd, ["init", "--data-dir", folder.appendingPathComponent("bad").path, "--org", "Politie!"])
        #expect(badOrg.exitCode != 0 && badOrg.stderr.contains("org"), "\(badOrg)")

        // The daemon then runs as that node.
        let d = try DaemonHarness(dataDir: data, arguments: ["--data-dir", data, "--empty", "--log-level", "warning"])
        defer { d.cleanup() }
        try await d.start()
        let status = try await d.get("/v1/status")
        #expect(status["node"]?.stringValue == node)
        #expect(status["org"]?.stringValue == "politie")
        #expect(status["name"]?.stringValue == "x")
    }

    @Test func curlWorksOnTheSocket() async throws {
        let d = try await DaemonHarness.started()
        defer { d.cleanup() }
        let result = try await runProcess(Binaries.curl, [
            "-sS", "--fail", "--unix-socket", d.socketPath, "http://localhost/v1/records/al1.r01.a01",
        ])
        #expect(result.exitCode == 0, "\(result)")
        let record = try JSONParser.parse(result.stdout)
        #expect(record["id"]?.stringValue == "al1.r01.a01")
        #expect(record["fields"]?["title"]?.stringValue == "Training politie-medewerkers")
        // A write through curl is authored by the Unix user (root here).
        let write = try await runProcess(Binaries.curl, [
            "-sS", "--fail", "--unix-socket", d.socketPath, "-X", "PATCH", "--data-binary", #"{"status": "ongoing"}"#,
            "http://localhost/v1/records/al1.r01.a01",
        ])
        #expect(write.exitCode == 0, "\(write)")
        let record2 = try await d.get("/v1/records/al1.r01.a01")
        #expect(record2["versions"]?["status"]?["author"]?.stringValue == NSUserName(), "author from SO_PEERCRED")
        #expect(NSUserName() == "root" || getuid() != 0)
    }
}
