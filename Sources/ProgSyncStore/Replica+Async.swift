import Dispatch
import Synchronization

extension DispatchQueue {
    /// Runs blocking work on this queue and resumes the awaiting task with its result: how async
    /// code calls SQLite (or other blocking work) without holding one of Swift's cooperative
    /// threads, of which a 2-core node has two.
    public func perform<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            self.async { continuation.resume(with: Result { try body() }) }
        }
    }
}

extension Replica {
    /// Blocking write work for an async caller (an apply, an import, a rebuild), on the writer's
    /// own thread, in the order asked: a task waiting for the writer waits without a thread.
    public func writing<T: Sendable>(_ body: @escaping @Sendable (Replica) throws -> T) async throws -> T {
        try await writerQueue.perform { try body(self) }
    }

    /// Queues `work` on the writer's thread, after the writes already asked for.
    public func onWriterThread(_ work: @escaping @Sendable () -> Void) {
        writerQueue.async(execute: work)
    }

    /// A long read for an async caller (a full self-check, a page of commits for a partner), on
    /// the replica's reader threads.
    public func reading<T: Sendable>(_ body: @escaping @Sendable (Replica) throws -> T) async throws -> T {
        try await readerQueue.perform { try body(self) }
    }

    /// Calls `observer` with the log's newest LSN after every commit of the writer, on the
    /// writer's thread: local writes, partners' commits, imports, reconciliation repairs alike.
    /// It must return quickly (hand bigger work to a queue of its own).
    public func onCommit(_ observer: @escaping @Sendable (_ lastLSN: Int64) -> Void) {
        commitObservers.list.withLock { $0.append(observer) }
    }
}
