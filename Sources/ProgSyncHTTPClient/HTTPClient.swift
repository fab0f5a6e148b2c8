import CCurl
import Synchronization

/// A small async HTTP/1.1 client over libcurl.
///
/// Each client performs its queued requests one at a time; the multi
/// handle's connection cache keeps the connection alive between requests.
/// A request waits in the queue while an earlier one (e.g. a long poll) is
/// running; use separate clients for traffic that must
/// not wait. Every client's transfers run on one libcurl multi handle driven
/// by one OS thread for the whole process (`CurlMulti`), so fifty partners
/// cost one thread, not a hundred, and no libcurl call runs on Swift's
/// cooperative thread pool.
///
/// Cancelling the task that awaits ``send(_:)`` removes a queued request at
/// once, and aborts a running one within about a second (libcurl's progress
/// callback period); the send then throws `CancellationError`.
public final class HTTPClient: Sendable {
    private let worker: Worker

    public init(configuration: HTTPClientConfiguration) throws {
        guard curlGlobalInitResult == CURLE_OK.rawValue else {
            throw HTTPClientError(
                code: .transport,
                message: "curl_global_init failed: \(curlErrorString(curlGlobalInitResult))"
            )
        }
        guard configuration.maxResponseBytes >= 0 else {
            throw HTTPClientError(code: .invalidRequest, message: "maxResponseBytes must not be negative")
        }
        let worker = Worker(configuration: configuration)
        try CurlMulti.shared().register(worker)
        self.worker = worker
    }

    deinit {
        worker.shutdown()
    }

    /// The configuration the client was created with.
    public var configuration: HTTPClientConfiguration {
        worker.configuration
    }

    /// Sends a request and returns the final response, whatever its status.
    ///
    /// Throws ``HTTPClientError`` for transfer failures, and
    /// `CancellationError` if the calling task is cancelled.
    public func send(_ request: HTTPClientRequest) async throws -> HTTPClientResponse {
        let prepared = try PreparedRequest(request)
        let worker = self.worker
        let id = worker.nextJobID()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                worker.enqueue(Worker.Job(id: id, request: prepared, continuation: continuation))
            }
        } onCancel: {
            worker.cancel(id)
        }
    }

    /// Stops the client. Idempotent. Queued sends fail at once with
    /// ``HTTPClientError/Code-swift.struct/shutdown``, a running one is
    /// aborted, and later sends fail. The worker thread then frees the
    /// libcurl handle and exits.
    public func shutdown() {
        worker.shutdown()
    }
}

/// `curl_global_init(CURL_GLOBAL_DEFAULT)`, run once per process (Swift
/// initializes globals lazily and thread-safely).
let curlGlobalInitResult: UInt32 = progsync_curl_global_init_default().rawValue

/// One client's queue, shared by ``HTTPClient/send(_:)`` callers and the multi thread.
final class Worker: Sendable {
    struct Job: Sendable {
        let id: UInt64
        let request: PreparedRequest
        let continuation: CheckedContinuation<HTTPClientResponse, any Error>
    }

    private struct State: Sendable {
        var queue: [Job] = []
        var currentJobID: UInt64?
        var isShutdown = false
    }

    let configuration: HTTPClientConfiguration
    private let state = Mutex(State())
    private let jobIDs = Atomic<UInt64>(0)
    /// The id of a running job whose task was cancelled.
    private let abortJobID = Atomic<UInt64>(0)
    private let isShutdown = Atomic<Bool>(false)

    init(configuration: HTTPClientConfiguration) {
        self.configuration = configuration
    }

    func nextJobID() -> UInt64 {
        jobIDs.add(1, ordering: .relaxed).newValue
    }

    func enqueue(_ job: Job) {
        // Task.isCancelled is read under the lock: a cancellation that lands
        // after this check runs `cancel` after the job is queued, so it is
        // never missed.
        let rejection: (any Error)? = state.withLock { state in
            if state.isShutdown {
                return HTTPClientError.clientShutdown
            }
            if Task.isCancelled {
                return CancellationError()
            }
            state.queue.append(job)
            return nil
        }
        if let rejection {
            job.continuation.resume(throwing: rejection)
        } else {
            CurlMulti.wake()
        }
    }

    func cancel(_ id: UInt64) {
        let removed: Job? = state.withLock { state in
            if let index = state.queue.firstIndex(where: { $0.id == id }) {
                return state.queue.remove(at: index)
            }
            if state.currentJobID == id {
                abortJobID.store(id, ordering: .relaxed)
            }
            return nil
        }
        removed?.continuation.resume(throwing: CancellationError())
        CurlMulti.wake()
    }

    func shutdown() {
        let pending: [Job]? = state.withLock { state in
            guard !state.isShutdown else { return nil }
            state.isShutdown = true
            let pending = state.queue
            state.queue = []
            return pending
        }
        guard let pending else { return }
        isShutdown.store(true, ordering: .relaxed)
        CurlMulti.wake()
        for job in pending {
            job.continuation.resume(throwing: HTTPClientError.clientShutdown)
        }
    }

    /// For the multi thread: the next job to start, or nil. Marks it running.
    func takeNext() -> Job? {
        state.withLock { state in
            guard !state.queue.isEmpty else { return nil }
            let job = state.queue.removeFirst()
            state.currentJobID = job.id
            return job
        }
    }

    /// For the multi thread: the running job ended (its continuation is resumed by the caller).
    func finished() {
        state.withLock { $0.currentJobID = nil }
    }

    /// Whether the running job `id` must stop: its task was cancelled or the client shut down.
    func shouldAbort(_ id: UInt64) -> Bool {
        abortJobID.load(ordering: .relaxed) == id || isShutdown.load(ordering: .relaxed)
    }

    var hasShutDown: Bool { isShutdown.load(ordering: .relaxed) }

    /// How an aborted transfer ends for its caller.
    func abortError(_ id: UInt64) -> any Error {
        abortJobID.load(ordering: .relaxed) == id ? CancellationError() : HTTPClientError.clientShutdown
    }
}

extension HTTPClientError {
    static var clientShutdown: HTTPClientError {
        HTTPClientError(code: .shutdown, message: "the HTTP client has been shut down")
    }
}
