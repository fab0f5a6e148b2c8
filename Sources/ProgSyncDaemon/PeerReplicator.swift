import Foundation
import Logging
import ProgSyncCore
import ProgSyncHTTPClient
import ProgSyncStore
import ServiceLifecycle
import Synchronization

/// What `progsync peers` shows for one peer.
struct PeerStatus: Sendable {
    enum State: String, Sendable { case connecting, up, backingOff = "backing-off", refused }
    var name: String
    var node: NodeID
    var org: String
    var address: String
    var state: State = .connecting
    var lastContact: UInt64?
    var lastError: String?
    var remoteLastLSN: Int64 = 0
    var pulled: Int64 = 0
    var pushed: Int64 = 0
    var caughtUpSince: UInt64?
    var lastPullCompleted: UInt64 = 0
    var pendingPush = 0
    /// What the partner said in `hello`: its peer protocol range and programme schema.
    var partnerProtocol: String?
    var partnerSchema: UInt32?
    /// The partner's clock minus ours when it last said hello (ms), as its hybrid clock shows it.
    var clockOffsetMilliseconds: Int64?
    /// A coordinator retired the partner: for good, whatever a request in flight reports after.
    var retired = false
    /// The partner dials this node and carries both directions; this node stands by (`PairDialling`).
    var dialledIn = false

    /// A connection that went quiet (a cut cable answers nothing, not even an error) shows as
    /// `silent` once a long poll should have come back; the request timeout ends it later.
    func shownState(now: UInt64) -> String {
        if retired { return "retired" }
        if state == .up, let last = lastContact, now > last + UInt64(PeerReplicator.longPollSeconds + 10) * 1000 { return "silent" }
        return state.rawValue
    }

    func json(now: UInt64, localLastLSN: Int64) -> JSONValue {
        var o: [String: JSONValue] = [
            "name": .string(name), "node": .string(node.rawValue), "org": .string(org), "address": .string(address),
            "state": .string(shownState(now: now)), "lagCommits": .int(lagCommits),
            "pendingPush": .int(Int64(pendingPush)), "pulled": .int(pulled), "pushed": .int(pushed),
        ]
        o["lastContact"] = lastContact.map { .string(Stamp.iso8601(milliseconds: $0)) } ?? .null
        o["lastError"] = lastError.map { .string($0) } ?? .null
        o["lagSeconds"] = .double(lagSeconds(now: now))
        o["protocol"] = partnerProtocol.map { .string($0) } ?? .null
        o["schema"] = partnerSchema.map { .int(Int64($0)) } ?? .null
        o["dialler"] = .string(dialledIn ? "partner" : "this node")
        return .object(o)
    }

    /// A partner that dials us pushes what it has; we do not learn its log's length then.
    var lagCommits: Int64 { dialledIn ? 0 : max(0, remoteLastLSN - pulled) }

    /// The wall clock can step back past the last contact: that is no lag, not a negative one.
    func lagSeconds(now: UInt64) -> Double {
        caughtUpSince != nil ? 0 : Double(now - min(now, lastContact ?? now)) / 1000
    }
}

/// One partner: pulls its feed with a long poll and pushes ours as soon as commits are stored,
/// each on its own libcurl connection so a long poll never delays a push. A failing peer backs
/// off with jitter and never blocks other peers or the local API. While the partner dials this
/// node and carries both directions itself, both loops stand by with their connections closed
/// (`PairDialling`).
final class PeerReplicator: Service, Sendable, PartnerCommitIntake {
    let peer: PartnerRegistry.Node
    let replica: Replica
    let events: EventBroadcaster
    let audit: AuditLog
    let logger: Logger
    let metrics: DaemonMetrics
    let pull: PeerConnection
    let push: PeerConnection
    let dialling: PairDialling
    let status: Mutex<PeerStatus>
    let stopping = Mutex(false)
    static let pullBatch = 5000
    static let pushBatch = 2000
    static let longPollSeconds = 20

    init(peer: PartnerRegistry.Node, address: String, tls: HTTPClientConfiguration.TLS?, replica: Replica,
         events: EventBroadcaster, dialling: PairDialling, metrics: DaemonMetrics, audit: AuditLog, logger: Logger) throws {
        self.peer = peer
        self.dialling = dialling
        self.metrics = metrics
        self.replica = replica
        self.events = events
        self.audit = audit
        var logger = logger
        logger[metadataKey: "peer"] = "\(peer.name ?? peer.id.rawValue)"
        self.logger = logger
        let config = HTTPClientConfiguration(connectTimeout: .seconds(5), requestTimeout: .seconds(60),
                                             maxResponseBytes: 256 << 20, tls: tls)
        pull = PeerConnection(baseURL: address, client: try HTTPClient(configuration: config))
        push = PeerConnection(baseURL: address, client: try HTTPClient(configuration: config))
        status = Mutex(PeerStatus(name: peer.name ?? peer.id.rawValue, node: peer.id, org: peer.org, address: address))
    }

    var isStopping: Bool { stopping.withLock { $0 } || status.withLock { $0.retired } }

    /// A coordinator retired this partner: it is no longer dialled, for good (it returns only
    /// under a new key, as another node).
    var isRetired: Bool { replica.registry.node(peer.id)?.isRetired ?? false }

    func run() async throws {
        // Cancelling on shutdown ends backoff sleeps and aborts a long poll at once.
        await withGracefulShutdownHandler {
            try? await cancelWhenGracefulShutdown {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.pullLoop() }
                    group.addTask { await self.pushLoop() }
                    group.addTask { await self.watchRetirement() }
                }
                // Retired: a service that returns would end the daemon; wait for its shutdown.
                if !self.stopping.withLock({ $0 }) { try? await Task.sleep(for: .seconds(86_400 * 365)) }
            }
        } onGracefulShutdown: {
            self.stopping.withLock { $0 = true }
            self.pull.shutdown()
            self.push.shutdown()
        }
    }

    // MARK: Loops

    /// Stops both loops within a second of the membership retiring this partner, a long poll
    /// in flight included.
    func watchRetirement() async {
        while !isStopping && !Task.isCancelled {
            if isRetired {
                status.withLock {
                    $0.retired = true
                    $0.lastError = "retired by a coordinator: no longer dialled"
                }
                logger.notice("partner retired by a coordinator: stopped replicating with it")
                pull.shutdown()
                push.shutdown()
                return
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    func pullLoop() async {
        var backoff = Backoff()
        var caughtUp = false
        // While a batch is applied the next one is already on its way (initial sync, catch-up).
        var prefetched: Task<JSONValue, any Error>?
        // The cursor the current request was sent with.
        var since: Int64 = 0
        var greeted = false
        var standing = false
        while !isStopping && !Task.isCancelled {
            if prefetched == nil, standingBy() != nil {
                if !standing {
                    standing = true
                    greeted = false
                    caughtUp = false
                    // A last hello, which also shows the partner's versions in `peers`, ends the connection.
                    _ = try? await greet(pull, closing: true)
                    logger.info("partner dials this node and carries both directions: standing by")
                }
                let now = Replica.wallClockMilliseconds()
                status.withLock { s in
                    s.dialledIn = true
                    s.state = .up
                    s.lastContact = now
                    s.lastError = nil
                    s.caughtUpSince = s.caughtUpSince ?? now
                }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            if standing {
                standing = false
                status.withLock { $0.dialledIn = false }
                logger.info("partner no longer dials this node: dialling it again")
            }
            do {
                let body: JSONValue
                var longPollStarted: ContinuousClock.Instant?
                if let next = prefetched {
                    prefetched = nil
                    body = try await next.value
                } else {
                    if !greeted {
                        _ = try await greet(pull)
                        greeted = true
                    }
                    since = try replica.peerCursor(peer.id).pulled
                    let wait = caughtUp ? Self.longPollSeconds : 0
                    if wait > 0 { longPollStarted = .now }
                    // A long poll says how many partners `peers.connect` names, for the pair's rule,
                    // and how far our feed has been pushed to the partner.
                    let dials = wait > 0 ? "&dials=\(dialling.dialsParameter)&pushed=\(try replica.peerCursor(peer.id).pushed)" : ""
                    body = try await pull.call("GET", "/v1/peer/commits?since=\(since)&limit=\(Self.pullBatch)&wait=\(wait)\(dials)",
                                          timeout: .seconds(wait + 10))
                }
                let commits = try CommitWire.decode(body["commits"] ?? .null, maxCommits: Self.pullBatch)
                let page = try Self.pullPage(body, since: since, commits: commits.count)
                let next = page.cursor
                caughtUp = !page.more
                if !caughtUp {
                    let pull = self.pull
                    prefetched = Task {
                        try await pull.call("GET", "/v1/peer/commits?since=\(next)&limit=\(Self.pullBatch)&wait=0", timeout: .seconds(30))
                    }
                }
                since = next
                let peerID = peer.id
                let report = try await merge(from: "pull:\(peerID.rawValue)") {
                    try $0.apply(commits) { db in try Replica.setPulled(db, peer: peerID, to: next) }
                }
                let now = Replica.wallClockMilliseconds()
                status.withLock { s in
                    s.state = .up
                    s.lastContact = now
                    s.lastError = nil
                    s.pulled = next
                    s.remoteLastLSN = page.lastLSN
                    s.lastPullCompleted = now
                    s.caughtUpSince = caughtUp ? (s.caughtUpSince ?? now) : nil
                }
                backoff.succeed()
                // An honest partner answers a long poll empty only when the wait is over; one that
                // answers at once would have us ask again at once, forever.
                if commits.isEmpty, let started = longPollStarted, ContinuousClock.now - started < .seconds(1) {
                    try await Task.sleep(for: .seconds(1))
                }
            } catch {
                prefetched?.cancel()
                prefetched = nil
                if isStopping || Task.isCancelled { return }
                caughtUp = false
                greeted = false
                await failed(error, backoff: &backoff)
            }
        }
        prefetched?.cancel()
    }

    func pushLoop() async {
        var backoff = Backoff()
        var peerVector: [NodeID: UInt64]?
        var standing = false
        while !isStopping && !Task.isCancelled {
            if let dialIn = standingBy() {
                if !standing {
                    standing = true
                    peerVector = nil
                    _ = try? await greet(push, closing: true)
                }
                // Its long poll's cursor: our commits up to there have reached it. And its feed up
                // to `pushed` has reached us. Both cursors follow, so dialling again later
                // fetches and sends nothing twice.
                let cursor = try? replica.peerCursor(peer.id)
                if let cursor, dialIn.since > cursor.pushed || dialIn.pushed > cursor.pulled {
                    try? await replica.writing { [peer] in
                        try $0.setPushed(peer: peer.id, to: dialIn.since)
                        try $0.advancePulled(peer: peer.id, to: dialIn.pushed)
                    }
                }
                let last = (try? replica.lastLSN) ?? 0
                status.withLock { s in
                    s.pushed = max(s.pushed, dialIn.since)
                    s.pendingPush = Int(max(0, last - dialIn.since))
                }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            standing = false
            do {
                if peerVector == nil {
                    let hello = try await greet(push)
                    let vector = CommitWire.versionVector(hello["versionVector"])
                    peerVector = vector
                    try await replica.writing { [peer] in try $0.setKnownVector(of: peer.id, vector) }
                    replica.partnerHolds(vector, partner: peer.id)
                }
                let pushed = try replica.peerCursor(peer.id).pushed
                // Bounded in bytes as pull answers are, so a batch stays within partners' push limit.
                let stored = Array(try await replica.reading { try $0.rawCommits(afterLSN: pushed, limit: Self.pushBatch) }
                    .prefix(bodyBytes: PeerAPI.maxBatchBytes))
                let last = try replica.lastLSN
                status.withLock { $0.pendingPush = Int(last - pushed); $0.pushed = pushed }
                guard let lastStored = stored.last else {
                    await events.waitForCommits(after: pushed, timeout: .seconds(10))
                    continue
                }
                let vector = peerVector ?? [:]
                let missing = stored.filter { c in c.seq > (NodeID(c.origin).flatMap { vector[$0] } ?? 0) }
                if !missing.isEmpty {
                    let wire = JSONValue.array(missing.map { CommitWire.json(body: $0.body, signature: $0.signature) })
                    let body = JSONValue.object(["commits": wire]).canonicalBytes
                    let answer = try await push.call("POST", "/v1/peer/commits", body: body, timeout: .seconds(60))
                    let vector = CommitWire.versionVector(answer["versionVector"])
                    peerVector = vector
                    try await replica.writing { [peer] in try $0.setKnownVector(of: peer.id, vector) }
                }
                try await replica.writing { [peer] in try $0.setPushed(peer: peer.id, to: lastStored.lsn) }
                let now = Replica.wallClockMilliseconds()
                status.withLock { s in
                    s.state = .up
                    s.lastContact = now
                    s.pushed = lastStored.lsn
                    s.pendingPush = Int(max(0, last - lastStored.lsn))
                }
                backoff.succeed()
            } catch {
                if isStopping || Task.isCancelled { return }
                peerVector = nil
                await failed(error, backoff: &backoff)
            }
        }
    }

    /// The partner's dial-in while this node should leave the pair's dialling to it. Never while
    /// a restored node waits for its partners' hellos to reopen local writes.
    func standingBy() -> PairDialling.DialIn? {
        guard replica.ownChainCatchUp == nil else { return nil }
        return dialling.standsBy(for: peer.id, now: Replica.wallClockMilliseconds())
    }

    /// Asks the partner who it is and which protocol and schema it speaks, before anything is
    /// pulled or pushed: a partner with no common protocol version is refused here, with a
    /// message that says which side must upgrade, and nothing of it is applied.
    func greet(_ connection: PeerConnection, closing: Bool = false) async throws -> JSONValue {
        let hello = try await connection.call("GET", "/v1/peer/hello", timeout: .seconds(15), closing: closing)
        guard hello["node"]?.stringValue == peer.id.rawValue else {
            throw PeerError("the peer at \(connection.baseURL) is node \(hello["node"]?.stringValue ?? "?"), not \(peer.id)")
        }
        let theirs = PeerProtocol(hello: hello) ?? PeerProtocol(version: 1, minimum: 1)
        let offset = hello["clock"]?.stringValue.flatMap(Stamp.init(hex:)).map {
            Int64($0.milliseconds) - Int64(Replica.wallClockMilliseconds())
        }
        status.withLock { s in
            s.clockOffsetMilliseconds = offset ?? s.clockOffsetMilliseconds
            s.partnerProtocol = theirs.description
            s.partnerSchema = hello["schema"]?.intValue.flatMap { UInt32(exactly: $0) } ?? 1
        }
        guard PeerProtocol.local.isCompatible(with: theirs) else {
            throw PeerError(PeerProtocol.local.incompatibility(with: theirs, me: "this node", them: "partner \(peer.name ?? peer.org)"))
        }
        return hello
    }

    /// Where a pull answer leaves the cursor. The partner's cursor and lastLSN are positions in
    /// its own log (0…2^63-1), and a page moves the cursor forward from `since`; "more" with an
    /// unmoved cursor would make the pull loop ask the same question forever.
    static func pullPage(_ body: JSONValue, since: Int64, commits: Int) throws -> (cursor: Int64, more: Bool, lastLSN: Int64) {
        guard let cursor = body["cursor"]?.intValue else { throw PeerError("peer answered without a cursor") }
        let more = body["more"]?.boolValue ?? false
        // An honest partner whose log restarted answers lastLSN < since; lag then shows as 0.
        let lastLSN = body["lastLSN"]?.intValue ?? cursor
        guard cursor >= 0, cursor >= since, lastLSN >= 0 else {
            throw PeerError("peer answered cursor \(cursor) and lastLSN \(lastLSN) to a pull since \(since); refused")
        }
        guard cursor > since || (!more && commits == 0) else {
            throw PeerError("peer answered \(commits) commits with cursor \(cursor) unmoved from \(since) and more to come; refused")
        }
        return (cursor, more, lastLSN)
    }


    func failed(_ error: any Error, backoff: inout Backoff) async {
        let message = "\(error)"
        // TLS 1.3 reports a refused client certificate after the handshake, as a read error.
        let refused = (error as? HTTPClientError).map { $0.code == .tls || $0.message.contains("alert") } ?? false
        let changed = status.withLock { s -> Bool in
            guard !s.retired else { return false }
            let changed = s.lastError != message
            s.state = refused ? .refused : .backingOff
            s.lastError = message
            s.caughtUpSince = nil
            return changed
        }
        if changed {
            if refused {
                logger.warning("peer refused the TLS handshake or its certificate does not match the registry pin", metadata: ["error": "\(message)"])
            } else {
                logger.info("peer unreachable, backing off", metadata: ["error": "\(message)"])
            }
        }
        try? await Task.sleep(for: backoff.fail(random: Double.random(in: 0...1)))
    }
}

struct PeerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
