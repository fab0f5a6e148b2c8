import Foundation
import ProgSyncCore
import ProgSyncStore
import ServiceLifecycle
import Synchronization

/// The change stream: every stored commit, in arrival order, as server-sent events whose ids are
/// LSNs. Subscribers are finished on shutdown so open streams never hold the daemon up. A
/// subscriber that falls more than its backlog behind is finished too (never silently skipped):
/// its client reconnects with `Last-Event-ID` and reads the rest from the commit log.
final class EventBroadcaster: Service, Sendable {
    /// One event: its LSN, and its text on the wire.
    struct Event: Sendable {
        var lsn: Int64
        var text: String
    }

    /// A new subscriber's live events, which start after `startLSN`.
    struct Subscription {
        var stream: AsyncStream<Event>
        var startLSN: Int64
    }

    struct State {
        var subscribers: [UUID: AsyncStream<Event>.Continuation] = [:]
        var waiters: [UUID: (after: Int64, continuation: CheckedContinuation<Void, Never>)] = [:]
        var abandonedWaits = Set<UUID>()
        /// The last LSN sent to the subscribers: a new subscriber's live events start after it.
        var lastLSN: Int64 = 0
        /// The log's end as the writer committed it: what long polls wait for.
        var committedLSN: Int64 = 0
        /// A fan-out to the subscribers is queued and has not started yet.
        var fanOutQueued = false
        var finished = false

        /// Wakes long polls that now have something to read.
        mutating func wakeWaiters() -> [CheckedContinuation<Void, Never>] {
            let ready = waiters.filter { $0.value.after < committedLSN || finished }
            for id in ready.keys { waiters.removeValue(forKey: id) }
            return ready.values.map(\.continuation)
        }
    }
    let state = Mutex(State())
    /// Reads and formats events for the subscribers, off the writer's thread and the cooperative pool.
    private let fanOut = DispatchQueue(label: "progsync.events")

    init(startingAfter lsn: Int64) {
        state.withLock {
            $0.lastLSN = lsn
            $0.committedLSN = lsn
        }
    }

    /// Follows every commit of `replica`'s writer, whatever path made it (local writes, partners,
    /// imports, bundles, quarantine releases, reconciliation repairs): one place publishes.
    convenience init(following replica: Replica) throws {
        self.init(startingAfter: try replica.lastLSN)
        replica.onCommit { [weak self, weak replica] lsn in
            guard let self, let replica else { return }
            self.committed(upTo: lsn, in: replica)
        }
    }

    /// A live stream holding at most `backlog` unread events; nil when `maxSubscribers` are
    /// already subscribed.
    func subscribe(maxSubscribers: Int, backlog: Int) -> Subscription? {
        let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .bufferingOldest(backlog))
        let id = UUID()
        let (added, start) = state.withLock { s -> (Bool?, Int64) in
            if s.finished { return (false, s.lastLSN) }
            guard s.subscribers.count < maxSubscribers else { return (nil, s.lastLSN) }
            // Nobody was listening: what is committed is already in the log, for the replay.
            if s.subscribers.isEmpty { s.lastLSN = max(s.lastLSN, s.committedLSN) }
            s.subscribers[id] = continuation
            return (true, s.lastLSN)
        }
        guard let added else { return nil }
        if !added { continuation.finish() }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) } }
        return Subscription(stream: stream, startLSN: start)
    }

    var isShuttingDown: Bool { state.withLock { $0.finished } }

    /// Called on the writer's thread after each commit: wakes the long polls at once and queues
    /// the (heavier) fan-out to the subscribers, so the writer never formats events.
    func committed(upTo lsn: Int64, in replica: Replica) {
        let (wake, queueFanOut) = state.withLock { s -> ([CheckedContinuation<Void, Never>], Bool) in
            s.committedLSN = max(s.committedLSN, lsn)
            guard !s.subscribers.isEmpty else {
                s.lastLSN = max(s.lastLSN, s.committedLSN)
                return (s.wakeWaiters(), false)
            }
            let queue = !s.fanOutQueued
            s.fanOutQueued = true
            return (s.wakeWaiters(), queue)
        }
        for continuation in wake { continuation.resume() }
        if queueFanOut { fanOut.async { self.publish(replica: replica) } }
    }

    /// Sends the subscribers every commit stored since the last fan-out. Runs on `fanOut` only,
    /// so one at a time; the log is read outside the lock, which the writer's thread takes.
    private func publish(replica: Replica) {
        while true {
            let from = state.withLock { s -> Int64? in
                s.fanOutQueued = false
                return s.subscribers.isEmpty ? nil : s.lastLSN
            }
            guard let from, let commits = try? replica.commits(afterLSN: from, limit: 10_000), !commits.isEmpty else { return }
            // One event at a time, as it is formatted: a reader that keeps up drains its stream
            // between two events, so a burst of commits does not overrun a small backlog.
            for stored in commits {
                let event = Event(lsn: stored.lsn, text: Self.event(stored, replica: replica))
                let behind = state.withLock { s -> [AsyncStream<Event>.Continuation] in
                    guard event.lsn > s.lastLSN else { return [] }
                    var behind: [AsyncStream<Event>.Continuation] = []
                    for (id, continuation) in s.subscribers {
                        if case .dropped = continuation.yield(event) {
                            s.subscribers.removeValue(forKey: id)
                            behind.append(continuation)
                        }
                    }
                    s.lastLSN = event.lsn
                    return behind
                }
                // Outside the lock: finishing runs the stream's onTermination, which takes it.
                for continuation in behind { continuation.finish() }
            }
        }
    }

    var lastLSN: Int64 { state.withLock { $0.lastLSN } }

    /// Returns once a commit after `lsn` is stored, or after `timeout`: the peer long poll.
    func waitForCommits(after lsn: Int64, timeout: Duration) async {
        let id = UUID()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = self.state.withLock { s -> Bool in
                        if s.committedLSN > lsn || s.finished || s.abandonedWaits.remove(id) != nil { return true }
                        s.waiters[id] = (lsn, continuation)
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
            }
            await group.next()
            group.cancelAll()
            // Whichever finished first, release the other side, even if it has not registered yet.
            let pending = self.state.withLock { s in
                s.abandonedWaits.insert(id)
                return s.waiters.removeValue(forKey: id)
            }
            pending?.continuation.resume()
        }
        _ = state.withLock { $0.abandonedWaits.remove(id) }
    }

    /// One commit as a server-sent event, live or replayed after `Last-Event-ID`.
    static func event(_ stored: StoredCommit, replica: Replica) -> String {
        let c = stored.commit.commit
        let org = replica.registry.org(of: c.origin)
        // This node's own commits show the name behind their pseudonym, as history does.
        let local = c.origin == replica.nodeID ? (try? replica.author(of: c.ref)) ?? nil : nil
        let author = local ?? c.author
        let data = JSONValue.object([
            "lsn": .int(stored.lsn), "origin": .string(c.origin.rawValue), "org": .string(org ?? "unknown"),
            "seq": .int(Int64(c.seq)), "stamp": .string(c.stamp.hex), "time": .string(c.stamp.description),
            "author": .string(author), "refused": .bool(stored.refused),
            "changes": .array(c.changes.map { .object(["record": .string($0.record), "field": .string($0.field), "value": $0.value]) }),
        ])
        return "id: \(stored.lsn)\nevent: commit\ndata: \(data.canonicalString)\n\n"
    }

    func run() async throws {
        try? await gracefulShutdown()
        let (subscribers, waiters) = state.withLock { s -> ([AsyncStream<Event>.Continuation], [CheckedContinuation<Void, Never>]) in
            s.finished = true
            defer { s.subscribers.removeAll() }
            return (Array(s.subscribers.values), s.wakeWaiters())
        }
        for continuation in subscribers { continuation.finish() }
        for continuation in waiters { continuation.resume() }
    }
}
