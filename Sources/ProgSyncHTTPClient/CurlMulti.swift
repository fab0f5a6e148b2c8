import CCurl
import Synchronization

/// One libcurl multi handle and the one OS thread that drives it, shared by
/// every ``HTTPClient`` of the process. Each client runs at most one transfer
/// at a time (its queue keeps order), each transfer on an easy handle of its
/// own, freed when it ends: kept-alive connections live in the multi handle's
/// cache, so an idle client holds no libcurl buffers (16 KB to read, 64 KB
/// once it has sent a body), which a hub's idle clients for fifty partners
/// would otherwise keep. The thread starts the next
/// queued job of each client, lets libcurl move every transfer along with
/// `curl_multi_perform`, and sleeps in `curl_multi_poll` until a socket is
/// ready, a second passes, or a client wakes it (a new job, a cancellation, a
/// shutdown). Only this thread touches easy handles.
final class CurlMulti: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    /// Clients registered since the thread last looked.
    private let arrivals = Mutex<[Worker]>([])

    private static let instance = Mutex<CurlMulti?>(nil)

    /// The process's multi handle, made (and its thread started) on first use.
    static func shared() throws(HTTPClientError) -> CurlMulti {
        let made: Result<CurlMulti, HTTPClientError> = instance.withLock { instance in
            if let instance { return .success(instance) }
            do throws(HTTPClientError) {
                let multi = try CurlMulti()
                instance = multi
                return .success(multi)
            } catch {
                return .failure(error)
            }
        }
        return try made.get()
    }

    /// Wakes the thread if there is one (a client's queue or state changed).
    static func wake() {
        if let multi = instance.withLock({ $0 }) { curl_multi_wakeup(multi.multi) }
    }

    private init() throws(HTTPClientError) {
        guard let multi = curl_multi_init() else {
            throw HTTPClientError(code: .transport, message: "curl_multi_init failed")
        }
        self.multi = multi
        try spawnThread { self.run() }
    }

    func register(_ worker: Worker) {
        arrivals.withLock { $0.append(worker) }
        curl_multi_wakeup(multi)
    }

    private struct Running {
        let job: Worker.Job
        let easy: CurlEasy
        let transfer: CurlEasy.Transfer
    }

    /// The thread's loop; it runs for the life of the process.
    private func run() {
        var clients: [ObjectIdentifier: Worker] = [:]
        var running: [ObjectIdentifier: Running] = [:]
        var byHandle: [UnsafeMutableRawPointer: ObjectIdentifier] = [:]
        while true {
            for worker in arrivals.withLock({ list in defer { list = [] }; return list }) {
                clients[ObjectIdentifier(worker)] = worker
            }
            // Start the next job of every idle client; forget clients that shut down.
            for (id, worker) in clients where running[id] == nil {
                while running[id] == nil, let job = worker.takeNext() {
                    let jobID = job.id
                    let easy: CurlEasy
                    do throws(HTTPClientError) { easy = try CurlEasy() } catch {
                        worker.finished()
                        Self.resume(job, worker, .failure(.error(error)))
                        continue
                    }
                    switch easy.start(job.request, configuration: worker.configuration, shouldAbort: { worker.shouldAbort(jobID) }) {
                    case .failure(let failure):
                        worker.finished()
                        Self.resume(job, worker, .failure(failure))
                    case .success(let transfer):
                        running[id] = Running(job: job, easy: easy, transfer: transfer)
                        byHandle[easy.rawHandle] = id
                        curl_multi_add_handle(multi, easy.rawHandle)
                    }
                }
                if running[id] == nil, worker.hasShutDown { clients[id] = nil }
            }
            var active: Int32 = 0
            curl_multi_perform(multi, &active)
            var left: Int32 = 0
            var finishedAny = false
            while let message = curl_multi_info_read(multi, &left) {
                guard message.pointee.msg == CURLMSG_DONE, let handle = message.pointee.easy_handle,
                    let id = byHandle.removeValue(forKey: handle), let worker = clients[id], let done = running.removeValue(forKey: id)
                else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, handle)
                let result = done.easy.finish(done.transfer, code: code, configuration: worker.configuration)
                worker.finished()
                Self.resume(done.job, worker, result)
                finishedAny = true
            }
            // A client whose transfer ended may have its next job queued: start it now.
            if finishedAny { continue }
            // A second at most: the progress callback, which aborts cancelled
            // transfers, runs from curl_multi_perform.
            curl_multi_poll(multi, nil, 0, running.isEmpty ? 10_000 : 1000, nil)
        }
    }

    private static func resume(_ job: Worker.Job, _ worker: Worker, _ result: Result<HTTPClientResponse, TransferFailure>) {
        switch result {
        case .success(let response):
            job.continuation.resume(returning: response)
        case .failure(.aborted):
            job.continuation.resume(throwing: worker.abortError(job.id))
        case .failure(.error(let error)):
            job.continuation.resume(throwing: error)
        }
    }
}
