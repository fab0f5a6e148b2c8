import Logging
import ProgSyncCore
import ProgSyncStore
import ProgSyncWeb

/// Everything `progsyncd` needs to start. Defaults give the zero-config node: a data folder in
/// the working directory, the socket inside it, and the 2021 programme loaded on first start.
public struct DaemonConfiguration: Sendable {
    public var dataDirectory: String
    public var socketPath: String
    public var registryPath: String
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    public var maxClockOffsetSeconds: Int
    public var loadSampleData: Bool
    /// The programme schema this node writes and judges by (`schema.version`): this build's
    /// newest unless pinned lower, which only mixed-version tests do.
    public var schemaVersion: UInt32 = ProgrammeSchema.current
    public var limits: Limits
    public var peerLimits: PeerLimits
    /// The peer listener, "host:port"; nil runs no peer listener (a node that only pulls and pushes).
    public var peerListen: String?
    /// The partners to dial (`peers.connect`, names or node ids); nil: every node with an address.
    public var peerConnect: [String]?
    /// Where Prometheus scrapes `GET /metrics` over TCP, "host:port"; nil serves it on the local
    /// socket only.
    public var metricsListen: String?
    /// Plain HTTP between peers: only on loopback, only when set (tests and demos).
    public var peerPlainHTTP: Bool
    public var tlsCertificatePath: String
    public var tlsKeyPath: String
    /// When the nightly reconciliation runs; `.off` runs it only on demand.
    public var reconcileSchedule: ReconcileSchedule
    public var reconcileKeepDays: Int
    /// When the nightly backup runs (off by default), where it goes, and how many are kept.
    public var backupSchedule: ReconcileSchedule
    public var backupFolder: String
    public var backupKeep: Int
    /// What local commits tell partners about their author: the Unix user name, or a pseudonym.
    public var authorShare: AuthorSharing
    /// The web app (`ui.*`): its own listener is off unless `ui.listen` is set.
    public var ui = WebConfiguration()

    public enum AuthorSharing: String, Sendable, CaseIterable {
        case name, pseudonym
    }

    public enum LogFormat: String, Sendable, CaseIterable {
        case logfmt, json
    }

    public struct Limits: Sendable {
        public var maxBodyBytes = 1 << 20
        public var maxImportBytes = 64 << 20
        public var maxBundleBytes = 1 << 30
        public var maxJSONDepth = 32
        public var maxPageSize = 1000
        /// Open `GET /v1/events` streams; one more is refused with 503.
        public var maxEventSubscribers = 64
        /// Events queued for one stream that does not keep up; past it the stream is closed and
        /// the client resumes with `Last-Event-ID`.
        public var maxEventBacklog = 1000
        public init() {}
    }

    /// What one partner, or anyone who can reach the peer port, may hold of this node.
    public struct PeerLimits: Sendable {
        /// Open connections to the peer listener; more are closed as they arrive.
        public var maxConnections = 256
        /// Open connections from one IP address.
        public var maxConnectionsPerAddress = 32
        /// A connection that has not finished its TLS handshake by then is closed.
        public var handshakeTimeoutSeconds = 10
        /// A connection with no request for this long is closed.
        /// Between requests only (a long poll in progress is not idle). A hub holds each spoke's
        /// push connection this long after its last push; our client closes its own after 20 s.
        public var idleTimeoutSeconds = 30
        /// Requests one partner (its pinned certificate) may have in progress; more get 429.
        public var maxRequestsPerPeer = 16
        /// Long polls (`GET /v1/peer/commits?wait=`) one partner may have waiting; more get 429.
        public var maxLongPollsPerPeer = 4
        /// Largest `POST /v1/peer/commits` body; larger gets 413.
        public var maxPushBytes = 64 << 20
        /// Most commits in one push or pull batch, and the longest long poll.
        public var maxBatch = 10_000
        public var maxWaitSeconds = 30
        public init() {}
    }

    public init(dataDirectory: String = "./progsync-data", socketPath: String? = nil, registryPath: String? = nil) {
        self.dataDirectory = dataDirectory
        self.socketPath = socketPath ?? dataDirectory + "/progsync.sock"
        self.registryPath = registryPath ?? dataDirectory + "/registry.json"
        logLevel = .info
        logFormat = .logfmt
        maxClockOffsetSeconds = 300
        loadSampleData = true
        limits = Limits()
        peerLimits = PeerLimits()
        peerListen = nil
        metricsListen = nil
        peerPlainHTTP = false
        tlsCertificatePath = dataDirectory + "/tls-cert.pem"
        tlsKeyPath = dataDirectory + "/tls-key.pem"
        reconcileSchedule = ReconcileSchedule("02:30")!
        reconcileKeepDays = 90
        backupSchedule = ReconcileSchedule("off")!
        backupFolder = dataDirectory + "/backups"
        backupKeep = 7
        authorShare = .pseudonym
    }

    var replicaPath: String { dataDirectory + "/replica.sqlite" }
    var identityPath: String { dataDirectory + "/identity.json" }
    var lockPath: String { dataDirectory + "/progsyncd.lock" }
    var reportsPath: String { dataDirectory + "/reports" }
    var auditPath: String { dataDirectory + "/audit.jsonl" }
    /// The invites this node issued (hashes of their secrets): local, never replicated.
    var invitesPath: String { dataDirectory + "/invites.json" }
}
