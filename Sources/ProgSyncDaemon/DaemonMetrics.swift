#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import Metrics
import NIOCore
import ProgSyncCore
import ProgSyncStore
import Prometheus
import Synchronization

/// The daemon's Prometheus metrics, recorded through swift-metrics into one registry.
///
/// Events are counted as they happen (commits merged, held, refused; write and merge latency;
/// HTTP requests through Hummingbird's `MetricsMiddleware`). State that already lives elsewhere
/// (peers, quarantine, conflicts, file sizes, the last reconciliation) is read into gauges when
/// `/metrics` is scraped, so a gauge can never drift from what `progsync status` shows.
public final class DaemonMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// Give it to `MetricsSystem.bootstrap` so that Hummingbird's request metrics land here too.
    public let factory: PrometheusMetricsFactory
    private let reconciliation = Mutex(ReconciliationState())
    let mergeDuration: Timer
    let localWriteDuration: Timer

    struct ReconciliationState {
        var lastStartMs: Int64?
        var lastDurationMs: Int64?
        var lastVerdict: String?
        var lastSuccessMs: Int64?
    }

    static let latencyBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10), .seconds(30),
    ]

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.nameAndLabelSanitizer = Self.prometheusName
        factory.defaultDurationHistogramBuckets = Self.latencyBuckets
        self.factory = factory
        // Made once, so the histograms are there (empty) from the first scrape.
        mergeDuration = Timer(label: "progsync_merge_duration_seconds", factory: factory)
        localWriteDuration = Timer(label: "progsync_local_write_duration_seconds", factory: factory)
    }

    /// Hummingbird's OpenTelemetry-style names and labels in Prometheus form, under our prefix.
    static func prometheusName(_ label: String, _ dimensions: [(String, String)]) -> (String, [(String, String)]) {
        let names = [
            "hb.requests": "progsync_http_requests_total",
            "hb.request.errors": "progsync_http_request_errors_total",
            "http.server.request.duration": "progsync_http_request_duration_seconds",
            "http.server.active_requests": "progsync_http_active_requests",
        ]
        let labels = [
            "http.route": "route", "http.request.method": "method", "http.response.status_code": "status", "error.type": "status",
        ]
        let name = names[label] ?? label.replacingOccurrences(of: ".", with: "_")
        return (name, dimensions.map { (labels[$0.0] ?? $0.0.replacingOccurrences(of: ".", with: "_"), $0.1) })
    }

    /// Every series we expose, with its help text (swift-metrics has no place for one).
    static let help: [String: String] = [
        "progsync_commits_applied_total": "Commits from partners merged into the replica, by origin org.",
        "progsync_commits_held_total": "Commits from partners put in quarantine on arrival, by origin org and reason.",
        "progsync_commits_refused_total": "Commits from partners refused, by origin org and reason.",
        "progsync_merge_duration_seconds": "Time to merge one batch of partners' commits into the replica (one transaction).",
        "progsync_local_write_duration_seconds": "Time from a local write request to its durable commit (group commit included).",
        "progsync_http_requests_total": "HTTP requests answered, by route template, method and status.",
        "progsync_http_request_errors_total": "HTTP requests that ended in an error, by route template, method and status.",
        "progsync_http_request_duration_seconds": "HTTP request duration, by route template, method and status.",
        "progsync_http_active_requests": "HTTP requests in progress, by method.",
        "progsync_peer_state": "Replication state per partner: 1 for the current one of up, silent, down.",
        "progsync_peer_lag_commits": "Commits the partner holds that this node has not pulled yet.",
        "progsync_peer_lag_seconds": "Seconds since this node was last caught up with the partner (0 while caught up).",
        "progsync_peer_pending_push_commits": "Commits of this node's log not yet pushed to the partner.",
        "progsync_peer_last_contact_timestamp_seconds": "When the partner last answered (Unix time).",
        "progsync_peer_clock_offset_seconds": "The partner's clock minus ours, from its hybrid clock at the last hello.",
        "progsync_reconciliation_last_run_start_timestamp_seconds": "When the last reconciliation started (Unix time).",
        "progsync_reconciliation_last_run_duration_seconds": "How long the last reconciliation took.",
        "progsync_reconciliation_in_agreement": "1 if the last reconciliation found the replicas in agreement, 0 if not.",
        "progsync_reconciliation_last_success_timestamp_seconds": "When the last reconciliation in agreement started (Unix time).",
        "progsync_reconciliation_fields_repaired_total": "Fields repaired by reconciliations since the daemon started.",
        "progsync_conflicts_open": "Fields with an open conflict.",
        "progsync_quarantine_commits": "Commits held in quarantine, by reason.",
        "progsync_quarantine_oldest_timestamp_seconds": "When the oldest commit in quarantine arrived (Unix time; 0 when empty).",
        "progsync_database_bytes": "Size of the replica's SQLite database file.",
        "progsync_database_wal_bytes": "Size of the replica's write-ahead log.",
        "progsync_data_filesystem_avail_bytes": "Bytes available to the daemon on the data folder's file system.",
        "progsync_data_filesystem_size_bytes": "Size of the data folder's file system.",
    ]

    // MARK: Events

    /// Counts what one merge did. The applied commits' origins are read back by their arrival
    /// numbers: the report counts them but does not name them.
    func recordMerge(_ report: ApplyReport, replica: Replica, duration: Duration) {
        mergeDuration.recordNanoseconds(duration.nanoseconds)
        let registry = replica.registry
        func org(_ id: NodeID) -> String { registry.org(of: id) ?? "unknown" }
        if report.applied > 0, let lsns = report.lsns {
            for (origin, count) in (try? replica.originCounts(lsns: lsns)) ?? [:] {
                Counter(label: "progsync_commits_applied_total", dimensions: [("origin_org", org(origin))], factory: factory)
                    .increment(by: count)
            }
        }
        for h in report.held {
            Counter(label: "progsync_commits_held_total", dimensions: [("origin_org", org(h.ref.origin)), ("reason", h.reason.description)],
                    factory: factory).increment()
        }
        for r in report.rejected {
            Counter(label: "progsync_commits_refused_total", dimensions: [("origin_org", org(r.ref.origin)), ("reason", r.reason.description)],
                    factory: factory).increment()
        }
    }

    /// Times a merge and counts its report.
    func merge(_ replica: Replica, _ body: () throws -> ApplyReport) rethrows -> ApplyReport {
        let start = ContinuousClock.now
        let report = try body()
        recordMerge(report, replica: replica, duration: ContinuousClock.now - start)
        return report
    }

    /// `merge` for a body that waits (the writer's own thread).
    func merging(_ replica: Replica, _ body: @Sendable () async throws -> ApplyReport) async rethrows -> ApplyReport {
        let start = ContinuousClock.now
        let report = try await body()
        recordMerge(report, replica: replica, duration: ContinuousClock.now - start)
        return report
    }

    func recordLocalWrite(_ duration: Duration) {
        localWriteDuration.recordNanoseconds(duration.nanoseconds)
    }

    /// Takes in a finished reconciliation report; `live` for a run of this process (stored
    /// reports read at start count no repairs again).
    func recordReconciliation(_ report: JSONValue, live: Bool) {
        guard let started = report["startedMs"]?.intValue else { return }
        let agree = report["verdict"]?.stringValue == "in agreement"
        reconciliation.withLock { s in
            if started >= (s.lastStartMs ?? .min) {
                s.lastStartMs = started
                s.lastDurationMs = report["durationMs"]?.intValue
                s.lastVerdict = report["verdict"]?.stringValue
            }
            if agree { s.lastSuccessMs = max(s.lastSuccessMs ?? .min, started) }
        }
        guard live else { return }
        var repaired = report["selfCheck"]?["fieldsRepaired"]?.intValue ?? 0
        for peer in report["peers"]?.arrayValue ?? [] { repaired += peer["narrowing"]?["fieldsRepaired"]?.intValue ?? 0 }
        Counter(label: "progsync_reconciliation_fields_repaired_total", factory: factory).increment(by: Int(clamping: repaired))
    }

    /// The newest report and the newest one in agreement, from the reports folder.
    func loadReconciliations(_ reports: ReconcileReports) {
        for id in reports.list().reversed() {
            guard let report = try? reports.load(id) else { continue }
            recordReconciliation(report, live: false)
            if report["verdict"]?.stringValue == "in agreement" { break }
        }
        // Present from the start, so a rate over it has a beginning.
        Counter(label: "progsync_reconciliation_fields_repaired_total", factory: factory).increment(by: 0)
    }

    // MARK: Scrape

    /// `GET /metrics`: reads the state gauges, then renders the text exposition with help lines.
    func exposition(replica: Replica, peers: [PeerReplicator], dataDirectory: String) -> Response {
        updateGauges(replica: replica, peers: peers, dataDirectory: dataDirectory)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: render())))
    }

    /// The text exposition of what is recorded, with help lines.
    func render() -> [UInt8] { Self.withHelp(registry.emitToBuffer()) }

    private func gauge(_ name: String, _ dimensions: [(String, String)], _ value: Double) {
        Gauge(label: name, dimensions: dimensions, factory: factory).record(value)
    }

    private func gauge(_ name: String, _ value: Double) {
        gauge(name, [], value)
    }

    func updateGauges(replica: Replica, peers: [PeerReplicator], dataDirectory: String) {
        let now = Replica.wallClockMilliseconds()
        for p in peers {
            let s = p.status.withLock { $0 }
            let labels = [("peer", s.name), ("peer_org", s.org)]
            let shown = s.shownState(now: now)
            // A retired partner is no partner: no state, so no "down" alert for it.
            let state = shown == "up" || shown == "silent" ? shown : shown == "retired" ? "" : "down"
            for candidate in ["up", "silent", "down"] {
                gauge("progsync_peer_state", labels + [("state", candidate)], candidate == state ? 1 : 0)
            }
            gauge("progsync_peer_lag_commits", labels, Double(s.lagCommits))
            gauge("progsync_peer_lag_seconds", labels, s.lagSeconds(now: now))
            gauge("progsync_peer_pending_push_commits", labels, Double(s.pendingPush))
            gauge("progsync_peer_last_contact_timestamp_seconds", labels, s.lastContact.map { Double($0) / 1000 } ?? 0)
            if let offset = s.clockOffsetMilliseconds {
                gauge("progsync_peer_clock_offset_seconds", labels, Double(offset) / 1000)
            }
        }
        if let counts = try? replica.attentionCounts() {
            gauge("progsync_conflicts_open", Double(counts.conflicts))
        }
        if let quarantine = try? replica.quarantineSummary() {
            let reasons = Set(quarantine.byReason.keys).union(["unknown-node", "gap", "missing-dependency", "clock-ahead"])
            for reason in reasons.sorted() {
                gauge("progsync_quarantine_commits", [("reason", reason)], Double(quarantine.byReason[reason] ?? 0))
            }
            gauge("progsync_quarantine_oldest_timestamp_seconds", quarantine.oldestReceivedAt.map { Double($0) / 1000 } ?? 0)
        }
        let path = replica.configuration.path
        gauge("progsync_database_bytes", Double(Self.fileSize(path)))
        gauge("progsync_database_wal_bytes", Double(Self.fileSize(path + "-wal")))
        var fs = statvfs()
        if statvfs(dataDirectory, &fs) == 0 {
            gauge("progsync_data_filesystem_avail_bytes", Double(fs.f_bavail) * Double(fs.f_frsize))
            gauge("progsync_data_filesystem_size_bytes", Double(fs.f_blocks) * Double(fs.f_frsize))
        }
        let r = reconciliation.withLock { $0 }
        if let start = r.lastStartMs {
            gauge("progsync_reconciliation_last_run_start_timestamp_seconds", Double(start) / 1000)
            gauge("progsync_reconciliation_last_run_duration_seconds", Double(r.lastDurationMs ?? 0) / 1000)
            gauge("progsync_reconciliation_in_agreement", r.lastVerdict == "in agreement" ? 1 : 0)
        }
        if let success = r.lastSuccessMs {
            gauge("progsync_reconciliation_last_success_timestamp_seconds", Double(success) / 1000)
        }
    }

    static func fileSize(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }

    /// Puts a `# HELP` line before each family's `# TYPE` line.
    static func withHelp(_ exposition: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(exposition.count + help.count * 80)
        for line in exposition.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if line.starts(with: "# TYPE ".utf8) {
                let name = String(decoding: line.dropFirst(7).prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
                out.append(contentsOf: "# HELP \(name) \(help[name] ?? name.replacingOccurrences(of: "_", with: " "))\n".utf8)
            }
            out.append(contentsOf: line)
            out.append(UInt8(ascii: "\n"))
        }
        // split leaves an empty last piece after the final newline.
        if out.count >= 2, out[out.count - 1] == UInt8(ascii: "\n"), out[out.count - 2] == UInt8(ascii: "\n") { out.removeLast() }
        return out
    }
}

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
