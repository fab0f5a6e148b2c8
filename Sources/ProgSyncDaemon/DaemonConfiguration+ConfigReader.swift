import Configuration
import Foundation
import Logging
import ProgSyncCore
import ProgSyncWeb

extension DaemonConfiguration {
    /// Reads the configuration under the `progsync` scope. Keys (YAML path / environment):
    /// - `progsync.data` / `PROGSYNC_DATA`: the data folder (default `./progsync-data`)
    /// - `progsync.socket` / `PROGSYNC_SOCKET`: the local API socket (default `<data>/progsync.sock`)
    /// - `progsync.registry` / `PROGSYNC_REGISTRY`: the partner registry file (default `<data>/registry.json`)
    /// - `progsync.log.level` / `PROGSYNC_LOG_LEVEL`: trace, debug, info, notice, warning, error, critical
    /// - `progsync.log.format` / `PROGSYNC_LOG_FORMAT`: logfmt or json
    /// - `progsync.clock.max-offset-seconds` / `PROGSYNC_CLOCK_MAX_OFFSET_SECONDS`: quarantine threshold (300; 1 to 31,536,000)
    /// - `progsync.sample-data` / `PROGSYNC_SAMPLE_DATA`: load the 2021 programme into a new replica (true)
    /// - `progsync.schema.version` / `PROGSYNC_SCHEMA_VERSION`: pin to an older programme schema (mixed-version tests only)
    /// - `progsync.limits.max-body-bytes`, `.max-import-bytes` (1 KiB to 1 GiB), `.max-json-depth` (2 to 512), `.max-page-size` (1 to 100,000)
    /// - `progsync.limits.max-event-subscribers` (64), `.max-event-backlog` (1000 events)
    /// - `progsync.peers.listen` / `PROGSYNC_PEERS_LISTEN`: peer listener "host:port" (none by default)
    /// - `progsync.peers.connect` / `PROGSYNC_PEERS_CONNECT`: the partners to dial, "hub" or "a,b" by name or node id (all with an address)
    /// - `progsync.peers.plain-http` / `PROGSYNC_PEERS_PLAIN_HTTP`: plain HTTP on loopback only (false)
    /// - `progsync.peers.max-connections` (256), `.max-connections-per-address` (32),
    ///   `.handshake-timeout-seconds` (10), `.idle-timeout-seconds` (30), `.max-requests-per-peer` (16),
    ///   `.max-long-polls-per-peer` (4), `.max-push-bytes` (67108864): the peer listener's limits
    /// - `progsync.metrics.listen` / `PROGSYNC_METRICS_LISTEN`: serve `GET /metrics` over plain HTTP on
    ///   "host:port", or on loopback for a bare port (off by default; `/metrics` is always on the socket)
    /// - `progsync.tls.certificate`, `progsync.tls.key`: the node's TLS files (default `<data>/tls-cert.pem`, `<data>/tls-key.pem`)
    /// - `progsync.reconcile.schedule` / `PROGSYNC_RECONCILE_SCHEDULE`: daily "HH:MM" in the node's time zone, or "off" (02:30)
    /// - `progsync.reconcile.keep-days` / `PROGSYNC_RECONCILE_KEEP_DAYS`: how long reconciliation reports are kept (90; 1 to 36,500)
    /// - `progsync.backup.schedule` / `PROGSYNC_BACKUP_SCHEDULE`: nightly backup, daily "HH:MM" or "off" (off)
    /// - `progsync.backup.folder` / `PROGSYNC_BACKUP_FOLDER`: where nightly backups go (`<data>/backups`)
    /// - `progsync.backup.keep` / `PROGSYNC_BACKUP_KEEP`: how many nightly backups are kept (7; 1 to 3,650)
    /// - `progsync.author.share` / `PROGSYNC_AUTHOR_SHARE`: what commits tell partners about their author,
    ///   `name` (the Unix user name) or `pseudonym` (a per-node pseudonym; the default)
    /// - `progsync.ui.*`: the web app (see `WebConfiguration`)
    /// `dataDirectory`, when given (the `--data-dir` flag), wins over the key and the environment.
    public init(reader: ConfigReader, dataDirectory: String? = nil) throws {
        let config = reader.scoped(to: "progsync")
        let data = dataDirectory ?? config.string(forKey: "data", default: "./progsync-data")
        self.init(
            dataDirectory: data,
            socketPath: config.string(forKey: "socket"),
            registryPath: config.string(forKey: "registry"))
        let level = config.string(forKey: "log.level", default: "info")
        guard let parsedLevel = Logger.Level(rawValue: level) else {
            throw ConfigurationError("log.level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not \(level)")
        }
        logLevel = parsedLevel
        let format = config.string(forKey: "log.format", default: "logfmt")
        guard let parsedFormat = LogFormat(rawValue: format) else {
            throw ConfigurationError("log.format must be logfmt or json, not \(format)")
        }
        logFormat = parsedFormat
        maxClockOffsetSeconds = try config.int(forKey: "clock.max-offset-seconds", default: 300, in: 1...31_536_000)
        loadSampleData = config.bool(forKey: "sample-data", default: true)
        schemaVersion = UInt32(try config.int(forKey: "schema.version", default: Int(ProgrammeSchema.current), in: 1...Int(ProgrammeSchema.current)))
        limits.maxBodyBytes = try config.int(forKey: "limits.max-body-bytes", default: limits.maxBodyBytes, in: 1024...(1 << 30))
        limits.maxImportBytes = try config.int(forKey: "limits.max-import-bytes", default: limits.maxImportBytes, in: 1024...(1 << 30))
        limits.maxJSONDepth = try config.int(forKey: "limits.max-json-depth", default: limits.maxJSONDepth, in: 2...512)
        limits.maxPageSize = try config.int(forKey: "limits.max-page-size", default: limits.maxPageSize, in: 1...100_000)
        limits.maxEventSubscribers = try config.int(forKey: "limits.max-event-subscribers", default: limits.maxEventSubscribers, in: 1...100_000)
        limits.maxEventBacklog = try config.int(forKey: "limits.max-event-backlog", default: limits.maxEventBacklog, in: 1...1_000_000)
        peerListen = config.string(forKey: "peers.listen")
        peerConnect = config.string(forKey: "peers.connect").map { text in
            text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        peerLimits.maxConnections = try config.int(forKey: "peers.max-connections", default: peerLimits.maxConnections, in: 1...100_000)
        peerLimits.maxConnectionsPerAddress = try config.int(
            forKey: "peers.max-connections-per-address", default: peerLimits.maxConnectionsPerAddress, in: 1...100_000)
        peerLimits.handshakeTimeoutSeconds = try config.int(
            forKey: "peers.handshake-timeout-seconds", default: peerLimits.handshakeTimeoutSeconds, in: 1...3600)
        peerLimits.idleTimeoutSeconds = try config.int(forKey: "peers.idle-timeout-seconds", default: peerLimits.idleTimeoutSeconds, in: 1...86_400)
        peerLimits.maxRequestsPerPeer = try config.int(forKey: "peers.max-requests-per-peer", default: peerLimits.maxRequestsPerPeer, in: 1...10_000)
        peerLimits.maxLongPollsPerPeer = try config.int(forKey: "peers.max-long-polls-per-peer", default: peerLimits.maxLongPollsPerPeer, in: 1...10_000)
        // At least a few MiB: the replicator pushes batches of up to 4 MiB of commits.
        peerLimits.maxPushBytes = try config.int(forKey: "peers.max-push-bytes", default: peerLimits.maxPushBytes, in: (64 << 10)...(1 << 30))
        peerPlainHTTP = config.bool(forKey: "peers.plain-http", default: false)
        if let listen = config.string(forKey: "metrics.listen") ?? config.int(forKey: "metrics.listen").map(String.init) {
            // A bare port is on loopback: metrics name partners and counts, for this machine only unless said otherwise.
            metricsListen = Int(listen) != nil ? "127.0.0.1:" + listen : listen
            _ = try splitHostPort(metricsListen!, key: "metrics.listen")
        }
        tlsCertificatePath = config.string(forKey: "tls.certificate", default: tlsCertificatePath)
        tlsKeyPath = config.string(forKey: "tls.key", default: tlsKeyPath)
        let schedule = config.string(forKey: "reconcile.schedule", default: "02:30")
        guard let parsedSchedule = ReconcileSchedule(schedule) else {
            throw ConfigurationError("reconcile.schedule must be a daily time HH:MM (e.g. 02:30) or off, not \(schedule)")
        }
        reconcileSchedule = parsedSchedule
        reconcileKeepDays = try config.int(forKey: "reconcile.keep-days", default: 90, in: 1...36_500)
        let backupAt = config.string(forKey: "backup.schedule", default: "off")
        guard let parsedBackup = ReconcileSchedule(backupAt) else {
            throw ConfigurationError("backup.schedule must be a daily time HH:MM (e.g. 03:00) or off, not \(backupAt)")
        }
        backupSchedule = parsedBackup
        backupFolder = config.string(forKey: "backup.folder", default: backupFolder)
        backupKeep = try config.int(forKey: "backup.keep", default: backupKeep, in: 1...3650)
        let share = config.string(forKey: "author.share", default: AuthorSharing.pseudonym.rawValue)
        guard let parsedShare = AuthorSharing(rawValue: share) else {
            throw ConfigurationError("author.share must be name or pseudonym, not \(share)")
        }
        authorShare = parsedShare
        // The web app's keys are listed on WebConfiguration.init(reader:int:).
        ui = try WebConfiguration(reader: config) { try config.int(forKey: $0, default: $1, in: $2) }
    }
}

extension ConfigReader {
    /// An integer key within `range`: the values feed byte counts, depths and millisecond
    /// arithmetic. A value that is not a whole number, or out of range, is a configuration error
    /// rather than a silent default or an overflow later.
    func int(forKey key: String, default defaultValue: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let value = int(forKey: ConfigKey(key)) else {
            if let text = string(forKey: ConfigKey(key)) { throw ConfigurationError("\(key) must be a whole number, not \(text)") }
            return defaultValue
        }
        guard range.contains(value) else {
            throw ConfigurationError("\(key) must be from \(range.lowerBound) to \(range.upperBound), not \(value)")
        }
        return value
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = "configuration: " + description }
}
