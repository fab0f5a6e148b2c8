import Dispatch
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// Local writes from concurrent requests share one transaction and one fsync (group commit).
/// Each request still gets its own signed commit and is answered only once the group is durable;
/// while one group commits, the next one gathers.
final class GroupCommitter: Sendable {
    let replica: Replica
    let metrics: DaemonMetrics?
    /// A bound on one group, so one transaction stays short.
    static let maxGroup = 256

    private struct Waiting {
        var write: LocalWrite
        var continuation: CheckedContinuation<SignedCommit, any Error>
    }

    private struct Queue {
        var waiting: [Waiting] = []
        var draining = false
    }

    private let queue = Mutex(Queue())

    init(replica: Replica, metrics: DaemonMetrics? = nil) {
        self.replica = replica
        self.metrics = metrics
    }

    func commit(_ write: LocalWrite) async throws -> SignedCommit {
        let start = ContinuousClock.now
        defer { metrics?.recordLocalWrite(ContinuousClock.now - start) }
        return try await withCheckedThrowingContinuation { continuation in
            let start = queue.withLock { q -> Bool in
                q.waiting.append(Waiting(write: write, continuation: continuation))
                guard !q.draining else { return false }
                q.draining = true
                return true
            }
            if start { replica.onWriterThread { self.drain() } }
        }
    }

    /// One group on the writer's thread (commits block on fsync), then the next group queues
    /// behind whatever other writes (a partner's batch) were asked for meanwhile.
    private func drain() {
        let group = queue.withLock { q -> [Waiting] in
            let group = Array(q.waiting.prefix(Self.maxGroup))
            q.waiting.removeFirst(group.count)
            if group.isEmpty { q.draining = false }
            return group
        }
        if group.isEmpty { return }
        let results = replica.commitLocalGroup(group.map(\.write))
        for (waiting, result) in zip(group, results) { waiting.continuation.resume(with: result) }
        replica.onWriterThread { self.drain() }
    }
}
