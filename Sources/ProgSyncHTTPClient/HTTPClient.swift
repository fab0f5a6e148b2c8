import CCurl
import Dispatch
import Synchronization

/// A small async HTTP/1.1 client over libcurl.
///
/// Each client owns one dedicated OS thread and one libcurl easy handle. The
/// thread performs queued requests one at a time, so blocking libcurl calls
/// never run on Swift's cooperative thread pool, and the easy handle's
/// connection cache keeps the connection alive between requests. A request
/// waits in the queue while an earlier one (e.g. a long poll) is running;
/// use separate clients for traffic that must not wait.
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
        let easy = try CurlEasy()
        let worker = Worker(configuration: configuration)
        let transfer = UnsafeTransfer(easy)
        try spawnThread {
            worker.run(easy: transfer.value)
        }
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
private let curlGlobalInitResult: UInt32 = progsync_curl_global_init_default().rawValue

/// Moves a value that is only ever used by one thread at a time across an
/// isolation boundary.
private struct UnsafeTransfer<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// The queue shared by ``HTTPClient/send(_:)`` callers and the worker thread.
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
    /// Signalled once per enqueued job and once on shutdown.
    private let wakeup = DispatchSemaphore(value: 0)
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
            wakeup.signal()
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
        wakeup.signal()
        for job in pending {
            job.continuation.resume(throwing: HTTPClientError.clientShutdown)
        }
    }

    /// The worker thread's loop. Returns (and frees the handle) after shutdown.
    func run(easy: CurlEasy) {
        enum Next {
            case run(Job)
            case idle
            case exit
        }
        while true {
            wakeup.wait()
            let next: Next = state.withLock { state in
                if !state.queue.isEmpty {
                    let job = state.queue.removeFirst()
                    state.currentJobID = job.id
                    return .run(job)
                }
                return state.isShutdown ? .exit : .idle
            }
            switch next {
            case .idle:
                continue
            case .exit:
                return
            case .run(let job):
                let id = job.id
                let result = easy.perform(job.request, configuration: configuration) {
                    self.abortJobID.load(ordering: .relaxed) == id || self.isShutdown.load(ordering: .relaxed)
                }
                state.withLock { $0.currentJobID = nil }
                switch result {
                case .success(let response):
                    job.continuation.resume(returning: response)
                case .failure(.aborted):
                    if abortJobID.load(ordering: .relaxed) == id {
                        job.continuation.resume(throwing: CancellationError())
                    } else {
                        job.continuation.resume(throwing: HTTPClientError.clientShutdown)
                    }
                case .failure(.error(let error)):
                    job.continuation.resume(throwing: error)
                }
            }
        }
    }
}

extension HTTPClientError {
    static var clientShutdown: HTTPClientError {
        HTTPClientError(code: .shutdown, message: "the HTTP client has been shut down")
    }
}
