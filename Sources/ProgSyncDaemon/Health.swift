import Dispatch
import Foundation
import Hummingbird
import Logging
import ProgSyncCore
import ProgSyncStore
import ServiceLifecycle
import Synchronization

/// The writer's heartbeat: every `interval` it sends an empty request down the replica's one
/// serial write path and, when that comes back, tells systemd `WATCHDOG=1`. A writer wedged
/// inside a transaction stops the heartbeat, and systemd restarts the daemon. The liveness check
/// (`GET /v1/health`) asks the same way, with a deadline.
///
/// Last in the service group, so it hears of shutdown first and tells systemd `STOPPING=1`.
final class WriterHeartbeat: Service, Sendable {
    let replica: Replica
    let notifier: SystemdNotifier
    let interval: Duration
    let logger: Logger
    /// A writer that does not answer within this is not live.
    static let livenessDeadline: Duration = .seconds(2)
    /// Waits on the writer here, never on the cooperative pool.
    private let queue = DispatchQueue(label: "progsync.writer-heartbeat")
    private let state = Mutex(State())

    private struct State {
        var askedAt: ContinuousClock.Instant?
        var lastAnswer: ContinuousClock.Instant?
    }

    init(replica: Replica, notifier: SystemdNotifier, logger: Logger) {
        self.replica = replica
        self.notifier = notifier
        self.logger = logger
        // systemd advises a beat at half its watchdog period.
        interval = notifier.watchdogInterval.map { $0 / 2 } ?? .seconds(10)
    }

    /// Whether the writer answered within `deadline`. One question is in flight at a time; a
    /// wedged writer keeps it, and every later ask waits on it in vain.
    func writerAnswers(within deadline: Duration) async -> Bool {
        let start = ContinuousClock.now
        let ask = state.withLock { s -> Bool in
            guard s.askedAt == nil else { return false }
            s.askedAt = start
            return true
        }
        if ask {
            queue.async { [self] in
                let answered = (try? replica.onWriter()) != nil
                state.withLock { s in
                    s.askedAt = nil
                    if answered { s.lastAnswer = .now }
                }
            }
        }
        while true {
            if let answer = state.withLock({ $0.lastAnswer }), answer >= start { return true }
            if ContinuousClock.now - start >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    func run() async throws {
        var wasWedged = false
        await withGracefulShutdownHandler {
            while !Task.isCancelled {
                let answered = await self.writerAnswers(within: min(self.interval, .seconds(30)))
                if answered {
                    self.notifier.send("WATCHDOG=1")
                } else if !wasWedged {
                    self.logger.error("the writer did not answer the heartbeat; the systemd watchdog will restart the daemon")
                }
                wasWedged = !answered
                guard (try? await cancelWhenGracefulShutdown({ try await Task.sleep(for: self.interval) })) != nil else { return }
            }
        } onGracefulShutdown: {
            self.notifier.send("STOPPING=1")
        }
    }
}

/// Readiness: migrations done (the replica opened), every listener bound, and the first
/// self-check of the replica (its log holds what its heads claim, its winners match its digest)
/// passed. A failed self-check is run again every minute; reconciliation repairs what it finds.
final class Readiness: Service, Sendable {
    enum SelfCheck: Sendable, Equatable {
        case pending, passed
        case failed(String)
    }

    private struct State {
        var expected: [String]
        var bound: Set<String> = []
        var selfCheck = SelfCheck.pending
    }

    let replica: Replica
    let notifier: SystemdNotifier
    let logger: Logger
    private let state: Mutex<State>

    init(replica: Replica, listeners: [String], notifier: SystemdNotifier, logger: Logger) {
        self.replica = replica
        self.notifier = notifier
        self.logger = logger
        state = Mutex(State(expected: listeners))
    }

    /// A listener is bound; once all are, systemd hears `READY=1`.
    func bound(_ listener: String) {
        let allNow = state.withLock { s -> Bool in
            let before = s.bound.count == s.expected.count
            s.bound.insert(listener)
            return !before && Set(s.expected).isSubset(of: s.bound)
        }
        if allNow {
            notifier.send("READY=1")
            logger.info("ready: all listeners bound")
        }
    }

    func run() async throws {
        while true {
            let result = await Self.selfCheck(replica)
            state.withLock { $0.selfCheck = result }
            if case .failed(let why) = result { logger.error("self-check failed", metadata: ["reason": "\(why)"]) }
            guard result != .passed else { break }
            guard (try? await cancelWhenGracefulShutdown({ try await Task.sleep(for: .seconds(60)) })) != nil else { return }
        }
        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(86_400 * 365 * 100)) }
    }

    /// The reconciler's self-check, read-only, on its own thread.
    static func selfCheck(_ replica: Replica) async -> SelfCheck {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                do {
                    let report = try replica.checkIntegrity()
                    if report.missingCommitCount > 0 {
                        continuation.resume(returning: .failed("the commit log lacks \(report.missingCommitCount) commits its heads claim"))
                    } else if !report.divergedBuckets.isEmpty {
                        continuation.resume(returning: .failed("\(report.divergedBuckets.count) digest buckets differ from the winners"))
                    } else {
                        continuation.resume(returning: .passed)
                    }
                } catch {
                    continuation.resume(returning: .failed("\(error)"))
                }
            }
        }
    }

    /// The checks and the problems, for `GET /v1/health/ready`.
    func report() -> (ready: Bool, checks: JSONValue, problems: [String]) {
        let s = state.withLock { $0 }
        var problems: [String] = []
        let unbound = s.expected.filter { !s.bound.contains($0) }
        if !unbound.isEmpty { problems.append("listeners not bound yet: \(unbound.joined(separator: ", "))") }
        let selfCheck: String
        switch s.selfCheck {
        case .pending:
            selfCheck = "pending"
            problems.append("the first self-check has not finished yet")
        case .passed:
            selfCheck = "passed"
        case .failed(let why):
            selfCheck = "failed"
            problems.append("self-check failed: \(why)")
        }
        let checks: JSONValue = .object([
            "migrations": .string("done"),
            "listeners": .object(Dictionary(uniqueKeysWithValues: s.expected.map { ($0, JSONValue.string(s.bound.contains($0) ? "bound" : "pending")) })),
            "selfCheck": .string(selfCheck),
        ])
        return (problems.isEmpty, checks, problems)
    }
}

/// The health routes of the local API.
struct HealthChecks: Sendable {
    let heartbeat: WriterHeartbeat
    let readiness: Readiness

    /// `GET /v1/health`: live when the writer answers within the deadline.
    func liveness() async -> Response {
        let start = ContinuousClock.now
        let live = await heartbeat.writerAnswers(within: WriterHeartbeat.livenessDeadline)
        let elapsed = ContinuousClock.now - start
        let deadline = WriterHeartbeat.livenessDeadline.components.seconds
        let problems = live ? [] : ["the writer did not answer within \(deadline) s"]
        return Self.answer(ok: live, code: "not-live", checks: .object([
            "writer": .string(live ? "answered" : "no answer"),
            "writerMs": .double(Double(elapsed.nanoseconds) / 1e6),
        ]), problems: problems)
    }

    /// `GET /v1/health/ready`.
    func ready() -> Response {
        let (ready, checks, problems) = readiness.report()
        return Self.answer(ok: ready, code: "not-ready", checks: checks, problems: problems)
    }

    /// 200 or 503, both with the checks and the problems; a 503 also has the error shape.
    static func answer(ok: Bool, code: String, checks: JSONValue, problems: [String]) -> Response {
        var body: [String: JSONValue] = [
            "status": .string(ok ? "ok" : "failing"), "checks": checks, "problems": .array(problems.map { .string($0) }),
        ]
        if !ok {
            body["error"] = .string(code)
            body["message"] = .string(problems.joined(separator: "; "))
        }
        return JSONResponse.make(status: ok ? .ok : .serviceUnavailable, .object(body))
    }
}

extension LocalAPI {
    func addHealthRoutes(to router: Router<LocalRequestContext>) {
        router.get("/v1/health") { _, _ in
            guard let health = self.health else { throw APIError(.serviceUnavailable, "not-live", "no health checks in this process") }
            return await health.liveness()
        }
        router.get("/v1/health/ready") { _, _ in
            guard let health = self.health else { throw APIError(.serviceUnavailable, "not-ready", "no health checks in this process") }
            return health.ready()
        }
    }
}

/// Test only: with `PROGSYNCD_TEST_WEDGE_WRITER=1` in its environment the daemon serves
/// `POST /v1/test/wedge-writer`, which blocks the writer for good, so a test can watch the
/// heartbeat stop. Never set it on a real node: the writer stays blocked until the process dies.
enum WriterWedge {
    static let environmentKey = "PROGSYNCD_TEST_WEDGE_WRITER"

    static func addRoute(to router: Router<LocalRequestContext>, replica: Replica, logger: Logger) {
        guard ProcessInfo.processInfo.environment[environmentKey] == "1" else { return }
        logger.warning("test hook enabled: POST /v1/test/wedge-writer blocks the writer", metadata: ["env": "\(environmentKey)"])
        router.post("/v1/test/wedge-writer") { _, _ in
            Thread.detachNewThread {
                try? replica.onWriter { while true { sleep(3600) } }
            }
            return JSONResponse.make(.object(["wedged": .bool(true)]))
        }
    }
}
