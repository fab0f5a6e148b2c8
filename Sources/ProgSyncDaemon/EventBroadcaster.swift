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
        var lastLSN: Int64 = 0
        var finished = false

        /// Wakes long polls that now have something to read.
        mutating func wakeWaiters() -> [CheckedContinuation<Void, Never>] {
            let ready = waiters.filter { $0.value.after < lastLSN || finished }
            for id in ready.keys { waiters.removeValue(forKey: id) }
            return ready.values.map(\.continuation)
        }
    }
    let state = Mutex(State())

    init(startingAfter lsn: Int64) {
        state.withLock { $0.lastLSN = lsn }
    }

    /// A live stream holding at most `backlog` unread events; nil when `maxSubscribers` are
    /// already subscribed.
    func subscribe(maxSubscribers: Int, backlog: Int) -> Subscription? {
        let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .bufferingOldest(backlog))
        let id = UUID()
        let (added, start) = state.withLock { s -> (Bool?, Int64) in
            if s.finished { return (false, s.lastLSN) }
            guard s.subscribers.count < maxSubscribers else { return (nil, s.lastLSN) }
            s.subscribers[id] = continuation
            return (true, s.lastLSN)
        }
        guard let added else { return nil }
        if !added { continuation.finish() }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) } }
        return Subscription(stream: stream, startLSN: start)
    }

    var isShuttingDown: Bool { state.withLock { $0.finished } }

    /// Sends every commit stored since the last call, and wakes long polls.
    func publish(replica: Replica) {
        let (wake, behind) = state.withLock { s -> ([CheckedContinuation<Void, Never>], [AsyncStream<Event>.Continuation]) in
            guard !s.subscribers.isEmpty else {
                s.lastLSN = (try? replica.lastLSN) ?? s.lastLSN
                return (s.wakeWaiters(), [])
            }
            guard let commits = try? replica.commits(afterLSN: s.lastLSN, limit: 100_000), !commits.isEmpty else { return ([], []) }
            var behind: [AsyncStream<Event>.Continuation] = []
            for stored in commits {
                let event = Event(lsn: stored.lsn, text: Self.event(stored, replica: replica))
                for (id, continuation) in s.subscribers {
                    if case .dropped = continuation.yield(event) {
                        s.subscribers.removeValue(forKey: id)
                        behind.append(continuation)
                    }
                }
            }
            s.lastLSN = commits.last!.lsn
            return (s.wakeWaiters(), behind)
        }
        // Outside the lock: finishing runs the stream's onTermination, which takes it.
        for continuation in behind { continuation.finish() }
        for continuation in wake { continuation.resume() }
    }

    var lastLSN: Int64 { state.withLock { $0.lastLSN } }

    /// Returns once a commit after `lsn` is stored, or after `timeout`: the peer long poll.
    func waitForCommits(after lsn: Int64, timeout: Duration) async {
        let id = UUID()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = self.state.withLock { s -> Bool in
                        if s.lastLSN > lsn || s.finished || s.abandonedWaits.remove(id) != nil { return true }
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
