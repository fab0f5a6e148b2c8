import Foundation
import GRDB
import Logging
import ProgSyncCore
import Synchronization

#if os(Linux)
/// glibc's malloc_trim (in <malloc.h>, which the Glibc module does not export).
@_silgen_name("malloc_trim") private func glibcMallocTrim(_ pad: Int) -> Int32
#endif

/// How a replica is opened. `now` is injectable so tests can run a node with a skewed clock.
public struct ReplicaConfiguration: Sendable {
    public var path: String
    public var identity: NodeIdentity
    public var org: String
    public var registry: PartnerRegistry
    public var maxClockOffsetMilliseconds: UInt64
    public var now: @Sendable () -> UInt64
    /// Bounds on what partners can make this node keep: a misbehaving or unknown origin must not
    /// fill the disk through the held and refused tables. The oldest rows go first, with a log line.
    public var limits: Limits
    public var logger: Logger
    /// The programme schema version this node writes and judges by: this build's newest, or an
    /// older one it is pinned to (`schema.version`, for mixed-version tests).
    public var schemaVersion: UInt32

    public struct Limits: Sendable {
        /// Held commits per known origin (gaps, missing dependencies, clock ahead).
        public var heldPerOrigin = 100_000
        /// Held commits from origins nobody knows, all together: anyone can make a new key.
        public var heldUnknownOrigins = 10_000
        /// Refused commits kept per origin.
        public var rejectedPerOrigin = 10_000
        public init() {}
    }

    public init(
        path: String, identity: NodeIdentity, org: String, registry: PartnerRegistry,
        maxClockOffsetMilliseconds: UInt64 = 5 * 60 * 1000,
        now: @escaping @Sendable () -> UInt64 = Replica.wallClockMilliseconds,
        limits: Limits = Limits(),
        logger: Logger = Logger(label: "progsync.replica"),
        schemaVersion: UInt32 = ProgrammeSchema.current
    ) {
        self.path = path
        self.identity = identity
        self.org = org
        self.registry = registry
        self.maxClockOffsetMilliseconds = maxClockOffsetMilliseconds
        self.now = now
        self.limits = limits
        self.logger = logger
        self.schemaVersion = schemaVersion
    }
}

/// One local write request: its fields, its author, and whether it resolves conflicts.
public struct LocalWrite: Sendable {
    public var author: String
    public var writes: [FieldWrite]
    public var resolving: Bool
    public init(author: String, writes: [FieldWrite], resolving: Bool = false) {
        self.author = author
        self.writes = writes
        self.resolving = resolving
    }
}

/// A field change asked for by a local user, before it becomes part of a commit.
public struct FieldWrite: Sendable, Hashable {
    public var record: String
    public var field: String
    public var value: JSONValue
    /// The version the writer saw and edited, when that may be older than what this replica
    /// holds now (a spreadsheet row exported days ago). The write then supersedes only that
    /// version, so a newer one stays as a competing version (a conflict) instead of being
    /// replaced unseen. nil: the write supersedes what the replica holds now.
    public var basis: CommitRef?
    public init(record: String, field: String, value: JSONValue, basis: CommitRef? = nil) {
        self.record = record
        self.field = field
        self.value = value
        self.basis = basis
    }
}

/// What one `apply` did.
public struct ApplyReport: Sendable, Equatable {
    public var applied = 0
    public var duplicates = 0
    public var changesMerged = 0
    public var held: [HeldCommit] = []
    public var rejected: [RejectedCommit] = []
    /// Arrival sequence numbers given to the commits stored by this call.
    public var lsns: ClosedRange<Int64>?
    /// Commits put back into a log that had lost them, and the records they touch.
    public var restored = 0
    public var restoredRecords = Set<String>()
    /// Applied commits written under a schema newer than this node's (kept, judged again later).
    public var newerSchema = 0

    public init() {}

    mutating func stored(lsn: Int64) {
        lsns = lsns.map { $0.lowerBound...lsn } ?? lsn...lsn
    }
}

public struct HeldCommit: Sendable, Equatable {
    public var ref: CommitRef
    public var hash: [UInt8]
    public var stamp: Stamp
    public var reason: CommitVerdict.Reason
    public var detail: String
    public var receivedAt: UInt64
}

public struct RejectedCommit: Sendable, Equatable {
    public var ref: CommitRef
    public var hash: [UInt8]
    public var reason: CommitVerdict.Reason
    public var detail: String
    public var at: UInt64
}

/// Refusals of a local write, each with a message fit for the person who asked.
public struct ReplicaError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawValue: String
        public var description: String { rawValue }
        public static let invalid = Code(rawValue: "invalid")
        public static let forbidden = Code(rawValue: "forbidden")
        public static let notFound = Code(rawValue: "not-found")
        public static let corrupt = Code(rawValue: "corrupt")
        /// A file the caller asked to create is there already.
        public static let exists = Code(rawValue: "exists")
        /// The replica went through migrations this build does not know.
        public static let newerDatabase = Code(rawValue: "newer-database")
        /// Restored from a backup: local writes wait for partners (`OwnChainGate`).
        public static let catchingUp = Code(rawValue: "catching-up")
    }
    public var code: Code
    public var message: String
    public var description: String { message }
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// The durable replica: one SQLite file, one writer, many readers. Every commit, local or remote,
/// goes through the same verify → authorise → merge path inside one transaction.
public final class Replica: Sendable {
    public struct Head: Sendable, Hashable {
        public var seq: UInt64
        public var hash: [UInt8]
    }

    struct State: Sendable {
        var heads: [NodeID: Head]
        var buckets: [BucketSum]
        var clock: HybridLogicalClock
        /// The registry this node was bootstrapped with (`registry.json`): its trust root.
        var trustRoot: PartnerRegistry
        /// The registry in force: the trust root with the membership records applied.
        var registry: PartnerRegistry
        /// The newest arrival in the commit log: the changes feed's end.
        var lastLSN: Int64
        /// Per origin, the commits its chain so far has named (its own and those it referenced):
        /// the causal past the ownership rule reads, carried along the origin's own chain.
        var pasts: [NodeID: CausalPast]
    }

    public let configuration: ReplicaConfiguration
    public var identity: NodeIdentity { configuration.identity }
    public var nodeID: NodeID { configuration.identity.id }
    let pool: any DatabaseWriter
    let state: Mutex<State>
    /// Plain read connections for record point reads; nil for an in-memory replica.
    let recordReader: RecordReader?
    /// Set while local writes wait after a restore (Replica+Restore.swift).
    let ownChain: Mutex<OwnChainGate?>
    /// The writer's own thread: async callers' writes run here in order, never on Swift's
    /// cooperative pool (see `writing`).
    let writerQueue = DispatchQueue(label: "progsync.writer")
    /// Long reads of async callers (self-check, digest entries, commit pages) run here.
    let readerQueue = DispatchQueue(label: "progsync.readers", attributes: .concurrent)
    /// Told the newest LSN after every commit of the writer, whatever path made it.
    let commitObservers = CommitObservers()
    /// List answers until the next commit (ListCache.swift).
    let lists = ListCache()

    public static let wallClockMilliseconds: @Sendable () -> UInt64 = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    public init(configuration: ReplicaConfiguration) throws {
        self.configuration = configuration
        var config = Configuration()
        config.prepareDatabase { db in
            // FULL: a commit acknowledged to a client or peer survives power loss.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // The writer gets 64 MiB of page cache (bulk merges touch B-tree pages all over the
            // fields table); readers keep SQLite's small default, so an idle daemon stays small.
            if !db.configuration.readonly {
                try db.execute(sql: "PRAGMA cache_size = -65536")
                // Checkpoint every 32 MiB of WAL rather than SQLite's 4 MiB: a bulk merge rewrites
                // the same B-tree pages batch after batch, and each checkpoint copies them again
                // (merge of 1M changes ~12% faster). The file is cut back to 64 MiB afterwards.
                try db.execute(sql: "PRAGMA wal_autocheckpoint = 8192; PRAGMA journal_size_limit = 67108864")
            }
        }
        config.busyMode = .timeout(10)
        config.maximumReaderCount = 2
        // ":memory:" gives a private in-memory replica (property tests); anything else a WAL file.
        pool = configuration.path == ":memory:"
            ? try DatabaseQueue(configuration: config)
            : try DatabasePool(path: configuration.path, configuration: config)
        recordReader = configuration.path == ":memory:" ? nil : RecordReader(path: configuration.path)
        // GRDB sets synchronous=NORMAL on a pool's writer after prepareDatabase runs; set FULL
        // again on the writer, the only connection that commits.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        try Self.migrate(pool, path: configuration.path, logger: configuration.logger)
        ownChain = Mutex(try Self.loadOwnChainGate(pool))
        try pool.writeWithoutTransaction { [recordReader, commitObservers, lists] db in
            db.add(transactionObserver: CommitNotifier(reader: recordReader, lists: lists, observers: commitObservers), extent: .databaseLifetime)
        }
        let loaded = try pool.read { db -> State in
            var heads: [NodeID: Head] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT origin, seq, hash FROM heads") {
                guard let id = NodeID(row[0]) else { throw ReplicaError(.corrupt, "invalid origin in heads table") }
                heads[id] = Head(seq: UInt64(row[1] as Int64), hash: [UInt8](row[2] as Data))
            }
            var buckets = [BucketSum](repeating: .zero, count: ReplicaDigest.bucketCount)
            for row in try Row.fetchAll(db, sql: "SELECT bucket, sum FROM digest_buckets") {
                let i: Int = row[0]
                guard (0..<ReplicaDigest.bucketCount).contains(i) else { continue }
                buckets[i] = BucketSum(bytes: [UInt8](row[1] as Data))
            }
            // The persisted clock (whose receives were capped at the clock guard) and this node's
            // own newest stamp; never another origin's stamp, or one far-ahead commit released
            // from quarantine would drag every later local commit into the future (#11).
            let persisted = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'clock'") ?? 0
            let ownNewest = try Int64.fetchOne(
                db, sql: "SELECT stamp FROM commits WHERE origin = ? ORDER BY seq DESC LIMIT 1",
                arguments: [configuration.identity.id.rawValue]) ?? 0
            // A persisted clock already dragged by an older build is cut back to the guard; own
            // stamps stay increasing through `ownNewest`.
            let guardStamp = Stamp(milliseconds: configuration.now() &+ configuration.maxClockOffsetMilliseconds, counter: 0)
            let clock = HybridLogicalClock(last: max(
                min(Stamp(rawValue: UInt64(bitPattern: persisted)), guardStamp), Stamp(rawValue: UInt64(bitPattern: ownNewest))))
            let lastLSN = try Int64.fetchOne(db, sql: "SELECT max(lsn) FROM commits") ?? 0
            var pasts: [NodeID: CausalPast] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT origin, past FROM causal_pasts") {
                guard let id = NodeID(row[0] as String), let past = CausalPast(text: row[1]) else {
                    throw ReplicaError(.corrupt, "invalid row in causal_pasts")
                }
                pasts[id] = past
            }
            return State(heads: heads, buckets: buckets, clock: clock, trustRoot: configuration.registry,
                         registry: try Self.membershipRegistry(db, trustRoot: configuration.registry), lastLSN: lastLSN, pasts: pasts)
        }
        state = Mutex(loaded)
        try judgeNewerSchemaAgain()
    }

    /// Runs `body` as the only writer, in one transaction; the in-memory caches change only if
    /// the transaction commits.
    func write<T>(_ body: (inout ApplyContext) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in
            let snapshot = state.withLock { $0 }
            var context = ApplyContext(db: db, replica: self, state: snapshot)
            var result: T?
            try db.inTransaction {
                result = try body(&context)
                try context.flush()
                return .commit
            }
            state.withLock { $0 = context.state }
            return result!
        }
    }

    // MARK: Writing

    /// Turns local field writes into one signed commit and applies it, in one transaction.
    /// `resolving` supersedes every competing version of the written fields, closing conflicts.
    @discardableResult
    public func commitLocal(author: String, writes: [FieldWrite], resolving: Bool = false) throws -> SignedCommit {
        try commitLocalGroup([LocalWrite(author: author, writes: writes, resolving: resolving)])[0].get()
    }

    /// Several independent local writes, each its own signed commit, in one transaction: one
    /// fsync for the group (group commit). A write that is refused is rolled back alone and gets
    /// its error; the others land. If the transaction fails, none lands and all get the error.
    public func commitLocalGroup(_ group: [LocalWrite]) -> [Result<SignedCommit, any Error>] {
        var results = group.map { w -> Result<SignedCommit, any Error>? in
            do { try Self.validateLocal(w.writes) } catch { return .failure(error) }
            return nil
        }
        do {
            try write { ctx in
                try passOwnChainGate(&ctx)
                for i in group.indices where results[i] == nil {
                    let before = ctx
                    do {
                        var signed: SignedCommit?
                        try ctx.db.inSavepoint {
                            signed = try ctx.commitLocal(author: group[i].author, writes: group[i].writes, resolving: group[i].resolving)
                            return .commit
                        }
                        results[i] = .success(signed!)
                    } catch {
                        // A full or failing disk fails the whole transaction: every write gets it.
                        if StorageFailure(error) != nil { throw error }
                        ctx = before
                        results[i] = .failure(error)
                    }
                }
                // A coordinator's admission applies a new node's held commits at once.
                if ctx.membershipChanged { try ctx.retryHeld() }
            }
        } catch {
            for i in group.indices {
                if case .failure? = results[i] { continue }
                results[i] = .failure(error)
            }
        }
        return results.map { $0! }
    }

    /// The schema and ownership are judged once, on the commit itself (`ApplyContext.judge`).
    static func validateLocal(_ writes: [FieldWrite]) throws {
        guard !writes.isEmpty else { throw ReplicaError(.invalid, "nothing to change") }
    }

    /// Several local commits in one transaction: an import lands whole or not at all, yet each
    /// commit stays bounded in size.
    @discardableResult
    public func commitLocalBatch(author: String, commits: [[FieldWrite]]) throws -> [SignedCommit] {
        let commits = commits.filter { !$0.isEmpty }
        for writes in commits { try Self.validateLocal(writes) }
        return try write { ctx in
            try passOwnChainGate(&ctx)
            return try commits.map { try ctx.commitLocal(author: author, writes: $0, resolving: false) }
        }
    }

    /// Applies remote commits (any order, duplicates allowed). Commits that cannot be applied yet
    /// are held, refused ones are logged; `inTransaction` runs in the same transaction (a peer
    /// cursor, say), so the batch and its bookkeeping land together or not at all.
    @discardableResult
    public func apply(_ commits: [SignedCommit], inTransaction extra: ((Database) throws -> Void)? = nil) throws -> ApplyReport {
        try write { ctx in
            try ctx.ingest(commits, fromHeld: false)
            try ctx.retryHeld()
            try extra?(ctx.db)
            return ctx.report
        }
    }

    /// Retries held commits (after time passed or the registry changed).
    @discardableResult
    public func retryHeld() throws -> ApplyReport {
        try write { ctx in
            try ctx.retryHeld()
            return ctx.report
        }
    }

    /// An operator releases a commit held for its clock: it is applied although it is ahead.
    @discardableResult
    public func releaseHeld(hash: [UInt8]) throws -> ApplyReport {
        try write { ctx in
            guard let row = try Row.fetchOne(ctx.db, sql: "SELECT body, sig, reason FROM held WHERE hash = ?", arguments: [Data(hash)])
            else { throw ReplicaError(.notFound, "no held commit with that hash") }
            let commit = try SignedCommit(canonicalBytes: [UInt8](row[0] as Data), signature: [UInt8](row[1] as Data))
            ctx.releasedFromClockGuard.insert(commit.hash)
            try ctx.ingest([commit], fromHeld: true)
            try ctx.retryHeld()
            return ctx.report
        }
    }

    /// A new trust root (the bootstrap registry); the membership records still apply on top.
    public func updateRegistry(_ registry: PartnerRegistry) throws {
        try write { ctx in
            ctx.state.trustRoot = registry
            try ctx.refreshMembership()
            try ctx.retryHeld()
        }
    }

    public var registry: PartnerRegistry { state.withLock { $0.registry } }
    /// The registry this node was bootstrapped with; every node of a partnership shares it.
    public var trustRoot: PartnerRegistry { state.withLock { $0.trustRoot } }

    // MARK: Reading

    public var versionVector: [NodeID: UInt64] { state.withLock { $0.heads.mapValues(\.seq) } }
    public var heads: [NodeID: Head] { state.withLock { $0.heads } }
    public var clock: Stamp { state.withLock { $0.clock.last } }
    public var digestBuckets: [BucketSum] { state.withLock { $0.buckets } }
    public var digestRoot: [UInt8] { ReplicaDigest.root(digestBuckets) }

    static func version(value: String, stamp: Int64, origin: String, seq: Int64) throws -> FieldVersion {
        guard let id = NodeID(origin) else { throw ReplicaError(.corrupt, "invalid origin in replica") }
        return FieldVersion(value: Array(value.utf8), stamp: Stamp(rawValue: UInt64(bitPattern: stamp)), origin: id, seq: UInt64(seq))
    }

    /// Runs a read-only query on a snapshot.
    public func read<T>(_ body: (Database) throws -> T) throws -> T {
        try pool.read(body)
    }

    /// Hands memory back after bulk work (a large import or sync): SQLite's page caches and the
    /// allocator's free lists, so an idle daemon stays small.
    public func releaseMemory() {
        try? pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA shrink_memory") }
        (pool as? DatabasePool)?.releaseMemory()
        recordReader?.trim()
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }

    /// The writer's `PRAGMA synchronous` (2 = FULL): every commit is fsynced before it is acknowledged.
    public var writerSynchronousMode: Int {
        get throws { try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 } }
    }

    public func close() throws {
        recordReader?.close()
        try pool.close()
    }
}

/// Tells the record readers about each commit of the writer, whatever path made it, so that they
/// drop snapshots from before it; then tells the commit observers (the change feed) the newest LSN.
final class CommitNotifier: TransactionObserver {
    let reader: RecordReader?
    let lists: ListCache
    let observers: CommitObservers
    init(reader: RecordReader?, lists: ListCache, observers: CommitObservers) {
        self.reader = reader
        self.lists = lists
        self.observers = observers
    }
    func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool { false }
    func databaseDidChange(with event: DatabaseEvent) {}
    func databaseDidCommit(_ db: Database) {
        reader?.writerCommitted()
        lists.writerCommitted()
        let notify = observers.list.withLock { $0 }
        // The log's end as committed (the in-memory state changes only after this returns).
        guard !notify.isEmpty, let lsn = try? Int64.fetchOne(db, sql: "SELECT max(lsn) FROM commits") else { return }
        for observer in notify { observer(lsn) }
    }
    func databaseDidRollback(_ db: Database) {}
}


/// Whoever follows the writer's commits (the change feed), called on the writer's thread.
final class CommitObservers: Sendable {
    let list = Mutex<[@Sendable (_ lastLSN: Int64) -> Void]>([])
}
