import Foundation
import ProgSyncCore
@testable import ProgSyncDaemon
import ProgSyncStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a partner's IT department runs the daemon with: Prometheus metrics and alerts, health
/// checks, and systemd's readiness and watchdog protocol. Real tools throughout: the daemon
/// binary, Prometheus and promtool (Debian's `prometheus`, installed by `scripts/setup.sh --test`),
/// systemd-analyze.
@Suite(.serialized)
struct OperationsTests {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let systemdAnalyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let setupHint: Comment = "not installed; run scripts/setup.sh --test"

    // MARK: Metrics

    /// The series the issue asks for, present from the first scrape of a node with a partner.
    static let expectedSeries = [
        "progsync_merge_duration_seconds_bucket", "progsync_local_write_duration_seconds_bucket",
        "progsync_http_requests_total", "progsync_http_request_duration_seconds_bucket",
        "progsync_peer_state", "progsync_peer_lag_commits", "progsync_peer_lag_seconds", "progsync_peer_pending_push_commits",
        "progsync_peer_last_contact_timestamp_seconds", "progsync_conflicts_open", "progsync_quarantine_commits",
        "progsync_quarantine_oldest_timestamp_seconds", "progsync_database_bytes", "progsync_database_wal_bytes",
        "progsync_data_filesystem_avail_bytes", "progsync_reconciliation_fields_repaired_total",
        "progsync_reconciliation_last_run_start_timestamp_seconds", "progsync_reconciliation_in_agreement",
        "progsync_reconciliation_last_run_duration_seconds",
    ]

    /// A daemon with a (down) partner in its registry and metrics on a loopback port.
    static func daemonWithPartner(metricsPort: Int, environment: [String: String] = [:]) async throws -> DaemonHarness {
        let harness = try DaemonHarness(environment: [
            "PROGSYNC_METRICS_LISTEN": "127.0.0.1:\(metricsPort)", "PROGSYNC_PEERS_PLAIN_HTTP": "true",
        ].merging(environment) { $1 })
        // First start writes the registry; add a partner at an address where nothing listens.
        try await harness.start()
        _ = try await harness.stop()
        let registryPath = harness.dataDir + "/registry.json"
        var registry = try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: registryPath))))
        guard case .object(var root) = registry, case .array(var orgs)? = root["orgs"] else { throw HarnessError("unexpected registry shape") }
        let partner = NodeIdentity()
        orgs.append(.object([
            "code": "politie", "name": "politie",
            "nodes": .array([.object([
                "id": .string(partner.id.rawValue), "name": "politie-test", "publicKey": .string(partner.publicKeyBase64),
                "address": .string("http://127.0.0.1:\(try freePort())"),
            ])]),
        ]))
        root["orgs"] = .array(orgs)
        registry = .object(root)
        try Data(registry.prettyString().utf8).write(to: URL(fileURLWithPath: registryPath))
        try await harness.start()
        return harness
    }

    @Test func exposesEverySeriesWithTemplatesAndPassesPromtool() async throws {
        let promtool = try #require(Self.promtool, Self.setupHint)
        let port = try freePort()
        let d = try await Self.daemonWithPartner(metricsPort: port)
        defer { d.cleanup() }
        #expect(try await d.request("PUT", "/v1/records/al1.r01.a01", body: ["explanation": "metrics test"]).status == 200)
        #expect(try await d.request("GET", "/v1/records/ops.nothing.here").status == 404)
        #expect(try await d.request("POST", "/v1/reconcile", body: [:]).status < 500)
        let socketReply = try await d.request("GET", "/metrics")
        #expect(socketReply.status == 200)
        #expect(socketReply.contentType.hasPrefix("text/plain; version=0.0.4"))
        let tcp = try await runProcess(Binaries.curl, ["-sS", "--max-time", "5", "http://127.0.0.1:\(port)/metrics"])
        #expect(tcp.exitCode == 0, "\(tcp)")
        let text = tcp.stdout
        for name in Self.expectedSeries {
            #expect(text.contains("\n\(name)"), "\(name) missing from /metrics")
        }
        // Route templates, never raw ids (the record read goes by the fast path; the 404 by the router).
        #expect(text.contains(#"route="/v1/records/{id}""#), "\(text.prefix(3000))")
        #expect(!text.contains("al1.r01.a01") && !text.contains("ops.nothing.here"))
        #expect(text.contains(#"progsync_peer_state{peer="politie-test",peer_org="politie",state="down"} 1.0"#), "\(text)")
        #expect(text.contains("progsync_reconciliation_in_agreement 0.0"), "\(text)")
        let check = try await runProcess(promtool, ["check", "metrics"], stdin: Array(text.utf8))
        #expect(check.exitCode == 0, "promtool check metrics: \(check)")
    }

    /// `metrics.listen` from YAML: a bare port is loopback; a malformed value stops the daemon in one line.
    @Test func metricsListenKeyIsReadAndChecked() async throws {
        let port = try freePort()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-ml-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let data = folder.appendingPathComponent("data").path, yaml = folder.appendingPathComponent("progsyncd.yaml").path
        try "progsync:\n  metrics:\n    listen: \(port)\n".write(toFile: yaml, atomically: true, encoding: .utf8)
        let d = try DaemonHarness(empty: true, dataDir: data, arguments: ["--data-dir", data, "--empty", "--config", yaml])
        defer { d.cleanup() }
        try await d.start()
        let scrape = try await runProcess(Binaries.curl, ["-sS", "--max-time", "5", "http://127.0.0.1:\(port)/metrics"])
        #expect(scrape.exitCode == 0 && scrape.stdout.contains("progsync_database_bytes"), "\(scrape)")
        _ = try await d.stop()
        try "progsync:\n  metrics:\n    listen: everywhere\n".write(toFile: yaml, atomically: true, encoding: .utf8)
        let refused = try await runProcess(Binaries.progsyncd, ["--data-dir", data, "--config", yaml], timeout: 30)
        #expect(refused.exitCode != 0 && !refused.signalled, "\(refused)")
        #expect(refused.stderr.contains("metrics.listen must be host:port, not everywhere"), "\(refused)")
    }

    @Test func countsMergedHeldAndRefusedCommitsByOriginOrg() throws {
        let me = NodeIdentity(), politie = NodeIdentity(), stranger = NodeIdentity()
        let registry = PartnerRegistry(nodes: [
            PartnerRegistry.Node(org: "jenv", publicKey: me.publicKey), PartnerRegistry.Node(org: "politie", publicKey: politie.publicKey),
        ], coordinators: ["jenv"])
        let receiver = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: me, org: "jenv", registry: registry))
        let sender = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: politie, org: "politie", registry: registry))
        let own = try sender.commitLocal(author: "anna", writes: [FieldWrite(record: "p1", field: "owner", value: "politie")])
        let second = try sender.commitLocal(author: "anna", writes: [FieldWrite(record: "p2", field: "owner", value: "politie")])
        let unknown = try SignedCommit.sign(
            Commit(origin: stranger.id, seq: 1, stamp: own.commit.stamp, author: "x", prev: [],
                   changes: [Change(record: "n1", field: "owner", value: "nla")]), with: stranger)
        // politie's seq 1 again, with other content and a signature that is not politie's.
        let forged = try SignedCommit.sign(
            Commit(origin: politie.id, seq: 1, stamp: own.commit.stamp, author: "x", prev: [],
                   changes: [Change(record: "p9", field: "owner", value: "politie")]), with: stranger)
        let metrics = DaemonMetrics()
        let first = try metrics.merge(receiver) { try receiver.apply([own, second, unknown]) }
        let report = try metrics.merge(receiver) { try receiver.apply([forged]) }
        #expect(first.applied == 2 && first.held.count == 1)
        #expect(report.rejected.count == 1)
        let text = String(decoding: metrics.render(), as: UTF8.self)
        #expect(text.contains(#"progsync_commits_applied_total{origin_org="politie"} 2"#), "\(text)")
        #expect(text.contains(#"progsync_commits_held_total{origin_org="unknown",reason="unknown-node"} 1"#), "\(text)")
        let reason = report.rejected[0].reason.rawValue
        #expect(text.contains(#"progsync_commits_refused_total{origin_org="politie",reason="\#(reason)"} 1"#), "\(text)")
        #expect(text.contains("# HELP progsync_commits_applied_total "))
        #expect(text.contains("progsync_merge_duration_seconds_count 2"))
    }

    /// A real Prometheus scrapes the daemon every second and answers queries about it.
    @Test(.timeLimit(.minutes(2))) func prometheusScrapesTheDaemon() async throws {
        let prometheus = try #require(Self.prometheus, Self.setupHint)
        let metricsPort = try freePort(), webPort = try freePort()
        let d = try await Self.daemonWithPartner(metricsPort: metricsPort)
        defer { d.cleanup() }
        let folder = d.folder.appendingPathComponent("prometheus")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let config = """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            rule_files: ["\(Self.repository.appendingPathComponent("Deploy/prometheus/alerts.yml").path)"]
            scrape_configs:
              - job_name: progsync
                static_configs:
                  - targets: ["127.0.0.1:\(metricsPort)"]
            """
        try Data(config.utf8).write(to: folder.appendingPathComponent("prometheus.yml"))
        let server = Process()
        server.executableURL = URL(fileURLWithPath: prometheus)
        server.arguments = [
            "--config.file=\(folder.path)/prometheus.yml", "--storage.tsdb.path=\(folder.path)/data",
            "--web.listen-address=127.0.0.1:\(webPort)",
        ]
        let log = folder.appendingPathComponent("prometheus.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        server.standardOutput = try FileHandle(forWritingTo: log)
        server.standardError = server.standardOutput
        try server.run()
        defer {
            kill(server.processIdentifier, SIGTERM)
            server.waitUntilExit()
        }
        #expect(try await d.request("PUT", "/v1/records/al1.r01.a01", body: ["explanation": "scraped"]).status == 200)

        func query(_ promql: String) async throws -> [JSONValue] {
            let encoded = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
            let r = try await runProcess(Binaries.curl, ["-sS", "--max-time", "5", "http://127.0.0.1:\(webPort)/api/v1/query?query=\(encoded)"])
            guard r.exitCode == 0, let json = try? JSONParser.parse(Array(r.stdout.utf8)) else { return [] }
            return json["data"]?["result"]?.arrayValue ?? []
        }
        // Up to 30 s for Prometheus to start and scrape twice.
        let deadline = Date().addingTimeInterval(30)
        var up: [JSONValue] = []
        while Date() < deadline {
            up = try await query(#"up{job="progsync"} == 1"#)
            if !up.isEmpty, try await !query("progsync_local_write_duration_seconds_count > 0").isEmpty { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        let prometheusLog = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        try #require(!up.isEmpty, "Prometheus never scraped the daemon:\n\(prometheusLog.suffix(3000))")
        for promql in [
            "progsync_database_bytes > 0", "progsync_local_write_duration_seconds_count > 0",
            #"progsync_http_requests_total{route="/v1/records/{id}",method="PUT"}"#,
            #"progsync_peer_state{peer="politie-test",state="down"} == 1"#, "progsync_quarantine_oldest_timestamp_seconds",
        ] {
            #expect(try await !query(promql).isEmpty, "no result for \(promql)")
        }
        // The alerting rules loaded and are evaluated against these series.
        let rules = try await runProcess(Binaries.curl, ["-sS", "--max-time", "5", "http://127.0.0.1:\(webPort)/api/v1/rules"])
        #expect(rules.stdout.contains("ProgsyncPeerDown"), "\(rules)")
    }

    @Test func alertRulesPassPromtoolAndFire() async throws {
        let promtool = try #require(Self.promtool, Self.setupHint)
        let alerts = Self.repository.appendingPathComponent("Deploy/prometheus/alerts.yml").path
        let check = try await runProcess(promtool, ["check", "rules", alerts])
        #expect(check.exitCode == 0, "\(check)")
        // promtool's rule unit tests: each alert fires on the series that should trigger it.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ops-rules-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let tests = """
            rule_files: ["\(alerts)"]
            evaluation_interval: 1m
            tests:
              - interval: 1m
                input_series:
                  - series: 'progsync_peer_state{instance="n1",peer="om",peer_org="om",state="down"}'
                    values: '1x20'
                  - series: 'progsync_reconciliation_in_agreement{instance="n1"}'
                    values: '0x20'
                  - series: 'progsync_quarantine_oldest_timestamp_seconds{instance="n1"}'
                    values: '60x120'
                  - series: 'progsync_data_filesystem_avail_bytes{instance="n1"}'
                    values: '5x20'
                  - series: 'progsync_data_filesystem_size_bytes{instance="n1"}'
                    values: '100x20'
                alert_rule_test:
                  - eval_time: 10m
                    alertname: ProgsyncPeerDown
                    exp_alerts: []
                  - eval_time: 16m
                    alertname: ProgsyncPeerDown
                    exp_alerts:
                      - exp_labels: {severity: warning, instance: n1, peer: om, peer_org: om, state: down}
                        exp_annotations:
                          summary: "progsync node n1 cannot reach partner om (om)"
                          description: "Down for 15 minutes. `progsync peers` shows the last error."
                  - eval_time: 16m
                    alertname: ProgsyncReconciliationNotInAgreement
                    exp_alerts:
                      - exp_labels: {severity: critical, instance: n1}
                        exp_annotations:
                          summary: "progsync node n1: the last reconciliation is not in agreement"
                          description: "Read the reasons with `progsync reconcile --report latest`."
                  - eval_time: 30m
                    alertname: ProgsyncCommitHeldOverAnHour
                    exp_alerts: []
                  - eval_time: 70m
                    alertname: ProgsyncCommitHeldOverAnHour
                    exp_alerts:
                      - exp_labels: {severity: warning, instance: n1}
                        exp_annotations:
                          summary: "progsync node n1 holds a commit in quarantine for over an hour"
                          description: "`progsync quarantine` lists the held commits and why."
                  - eval_time: 16m
                    alertname: ProgsyncDiskAlmostFull
                    exp_alerts:
                      - exp_labels: {severity: critical, instance: n1}
                        exp_annotations:
                          summary: "progsync node n1: data disk almost full"
                          description: "5% left on the file system of the data folder."
            """
        let testFile = folder.appendingPathComponent("alerts.test.yml")
        try Data(tests.utf8).write(to: testFile)
        let run = try await runProcess(promtool, ["test", "rules", testFile.path])
        #expect(run.exitCode == 0, "\(run)")
    }

    // MARK: Health

    @Test func healthAndReadinessAnswerJSON() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        let live = try await d.request("GET", "/v1/health")
        #expect(live.status == 200, "\(live)")
        #expect(live.json["status"] == "ok" && live.json["checks"]?["writer"] == "answered", "\(live)")
        var ready = try await d.request("GET", "/v1/health/ready")
        let deadline = Date().addingTimeInterval(10)
        while ready.status != 200, Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            ready = try await d.request("GET", "/v1/health/ready")
        }
        #expect(ready.status == 200, "\(ready)")
        #expect(ready.json["checks"]?["selfCheck"] == "passed" && ready.json["checks"]?["listeners"]?["local"] == "bound", "\(ready)")
        // The wedge hook exists only when the test-only variable is set.
        #expect(try await d.request("POST", "/v1/test/wedge-writer").status == 404)
        let check = try await d.runCLI(["status", "--check"])
        #expect(check.exitCode == 0, "\(check)")
        #expect(check.stdout.hasPrefix("OK"), "\(check)")
    }

    @Test func statusCheckNamesEachProblem() async throws {
        let d = try await Self.daemonWithPartner(metricsPort: try freePort())
        defer { d.cleanup() }
        let check = try await d.runCLI(["status", "--check"])
        #expect(check.exitCode == 1, "\(check)")
        let lines = check.stdout.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("WARNING: partner politie-test is ") }, "\(check)")
        try await d.stop()
        let gone = try await d.runCLI(["status", "--check"])
        #expect(gone.exitCode == 2, "\(gone)")
        #expect(gone.stdout.hasPrefix("CRITICAL: "), "\(gone)")
    }

    // MARK: systemd

    @Test(.timeLimit(.minutes(2))) func notifiesReadyWatchdogAndStopping() async throws {
        for address in ["path", "abstract"] {
            let listener = try NotifyListener(abstract: address == "abstract")
            defer { listener.close() }
            let d = try DaemonHarness(empty: true, environment: ["NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000"])
            defer { d.cleanup() }
            try await d.start()
            #expect(try await listener.waitFor("READY=1", timeout: 10), "\(address): no READY=1; got \(listener.received)")
            #expect(try await listener.waitFor("WATCHDOG=1", timeout: 5), "\(address): no WATCHDOG=1; got \(listener.received)")
            _ = try await d.stop()
            #expect(listener.received.contains("STOPPING=1"), "\(address): no STOPPING=1; got \(listener.received)")
            let ready = listener.received.firstIndex(of: "READY=1") ?? .max
            #expect(ready < (listener.received.firstIndex(of: "STOPPING=1") ?? -1))
        }
    }

    @Test(.timeLimit(.minutes(2))) func aWedgedWriterStopsTheHeartbeat() async throws {
        let listener = try NotifyListener(abstract: false)
        defer { listener.close() }
        let d = try DaemonHarness(empty: true, environment: [
            "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000", WriterWedge.environmentKey: "1",
        ])
        defer { d.cleanup() }
        try await d.start()
        #expect(try await listener.waitFor("WATCHDOG=1", timeout: 5))
        // Beats keep coming while the writer works (one every 200 ms; slack for a loaded machine).
        try await Task.sleep(for: .milliseconds(1500))
        let before = listener.received.filter { $0 == "WATCHDOG=1" }.count
        #expect(before >= 3, "\(listener.received)")
        #expect(try await d.request("POST", "/v1/test/wedge-writer").status == 200)
        // A beat already past the writer may still arrive; after that, none.
        try await Task.sleep(for: .milliseconds(500))
        let atWedge = listener.received.count
        try await Task.sleep(for: .seconds(2))
        let after = listener.received.dropFirst(atWedge).filter { $0 == "WATCHDOG=1" }
        #expect(after.isEmpty, "heartbeat went on with a wedged writer: \(after.count) beats")
        let live = try await d.request("GET", "/v1/health")
        #expect(live.status == 503 && live.isErrorShape, "\(live)")
        #expect(live.json["checks"]?["writer"] == "no answer", "\(live)")
        // Reads do not need the writer: status still answers.
        #expect(try await d.request("GET", "/v1/status").status == 200)
        d.kill9()
    }

    @Test func unitFileVerifiesAndIsHardened() async throws {
        let analyze = try #require(Self.systemdAnalyze, "systemd-analyze not installed")
        let unit = try String(contentsOf: Self.repository.appendingPathComponent("Deploy/systemd/progsyncd.service"), encoding: .utf8)
        #expect(unit.contains("\nType=notify\n") && unit.contains("\nWatchdogSec="))
        // verify wants ExecStart's binary to exist: point it at the one just built.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ops-unit-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let local = unit.replacingOccurrences(of: "/usr/local/bin/progsyncd", with: Binaries.progsyncd)
        let path = folder.appendingPathComponent("progsyncd.service").path
        try Data(local.utf8).write(to: URL(fileURLWithPath: path))
        let verify = try await runProcess(analyze, ["verify", path])
        #expect(verify.exitCode == 0 && verify.stderr.isEmpty && verify.stdout.isEmpty, "\(verify)")
        let security = try await runProcess(analyze, ["security", "--offline=yes", "--no-pager", path])
        #expect(security.exitCode == 0, "\(security)")
        let line = try #require(security.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") }, "\(security)")
        let score = line.split(separator: ":").last?.split(separator: " ").first.flatMap { Double($0) }
        #expect((score ?? 99) <= 2.0, "\(line)")
    }
}

/// A datagram socket standing in for systemd's notification socket: collects each message.
final class NotifyListener: @unchecked Sendable {
    let address: String
    private let fd: Int32
    private let lock = NSLock()
    private var messages: [String] = []
    private var thread: Thread?
    private var closed = false

    init(abstract: Bool) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        let name = "psn-\(UUID().uuidString.prefix(8))"
        var bytes: [UInt8]
        if abstract {
            address = "@" + name
            bytes = [0] + Array(name.utf8)
        } else {
            address = FileManager.default.temporaryDirectory.appendingPathComponent(name).path
            bytes = Array(address.utf8) + [0]
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count - (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { throw HarnessError("bind \(address): \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !lock.withLock({ closed }) {
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0 else { continue }
                let text = String(decoding: buffer[0..<n], as: UTF8.self)
                lock.withLock { messages.append(contentsOf: text.split(separator: "\n").map(String.init)) }
            }
        }
        self.thread = thread
        thread.start()
    }

    var received: [String] { lock.withLock { messages } }

    func waitFor(_ message: String, timeout: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if received.contains(message) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    func close() {
        lock.withLock { closed = true }
        Thread.sleep(forTimeInterval: 0.15)
        Glibc.close(fd)
        if !address.hasPrefix("@") { unlink(address) }
    }
}

/// A TCP port on loopback that nothing listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard bound else { throw HarnessError("no free port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}
