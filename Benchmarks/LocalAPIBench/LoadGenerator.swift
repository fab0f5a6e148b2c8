// The load generator: one OS thread per keep-alive connection, each sending pre-built requests
// back to back and timing each with the monotonic clock. No Swift concurrency, no allocation per
// request (request bytes are assembled into a fixed buffer; latencies go into a reserved array).
import Glibc

enum RequestKind: Sendable {
    case get
    case patchStatus
}

struct LoadSpec: Sendable {
    var socketPath: String
    var kind: RequestKind
    /// Record ids to pick from at random (ASCII bytes).
    var ids: [[UInt8]]
    var connections: Int
    /// 0: one thread per connection, blocking I/O. T > 0: the connections spread over T threads using poll(2).
    var clientThreads: Int
    var warmupSeconds: Double
    var durationSeconds: Double
    var seed: UInt64
}

struct LoadResult: Sendable {
    var requests: Int  // completed inside the measured window
    var seconds: Double
    var p50ms: Double
    var p99ms: Double
    var maxms: Double
    var non2xx: Int
    var ioErrors: Int
    var firstError: String?
    var statusCounts: [Int: Int]
    var framing: String  // "content-length", "chunked", or both
    var clientCPUPercent: Double

    var requestsPerSecond: Double { seconds > 0 ? Double(requests) / seconds : 0 }
}

let statusCodes = ["completed", "ongoing", "on-track", "delayed", "not-started", "in-consultation", "not-applicable"]

/// Builds requests in place: random id, and for PATCH a random status body.
private struct RequestBuilder {
    let prefix: UnsafeMutableBufferPointer<UInt8>
    let suffix: UnsafeMutableBufferPointer<UInt8>
    let bodies: [UnsafeMutableBufferPointer<UInt8>]
    let flat: UnsafeMutablePointer<UInt8>
    let offsets: UnsafeMutablePointer<Int>
    let idCount: UInt64
    let capacity: Int
    var rng: SplitMix64

    init(spec: LoadSpec, seed: UInt64) {
        func buffer(_ bytes: [UInt8]) -> UnsafeMutableBufferPointer<UInt8> {
            let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(bytes.count, 1))
            _ = b.initialize(from: bytes)
            return UnsafeMutableBufferPointer(rebasing: b[0..<bytes.count])
        }
        switch spec.kind {
        case .get:
            prefix = buffer(Array("GET /v1/records/".utf8))
            suffix = buffer(Array(" HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
            bodies = []
        case .patchStatus:
            prefix = buffer(Array("PATCH /v1/records/".utf8))
            suffix = buffer(Array(" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".utf8))
            bodies = statusCodes.map { code in
                let body = Array("{\"status\":\"\(code)\"}".utf8)
                return buffer(Array("Content-Length: \(body.count)\r\n\r\n".utf8) + body)
            }
        }
        // The ids, flattened into one buffer so the loop touches no reference-counted arrays.
        let flatCount = spec.ids.reduce(0) { $0 + $1.count }
        flat = .allocate(capacity: max(flatCount, 1))
        offsets = .allocate(capacity: spec.ids.count + 1)
        var at = 0
        for (i, id) in spec.ids.enumerated() {
            offsets[i] = at
            (flat + at).update(from: id, count: id.count)
            at += id.count
        }
        offsets[spec.ids.count] = at
        idCount = UInt64(spec.ids.count)
        capacity = prefix.count + (spec.ids.map(\.count).max() ?? 0) + suffix.count + (bodies.map(\.count).max() ?? 0)
        rng = SplitMix64(seed: seed)
    }

    func deallocate() {
        prefix.deallocate()
        suffix.deallocate()
        for b in bodies { b.deallocate() }
        flat.deallocate()
        offsets.deallocate()
    }

    /// Writes the next request into `request` (at least `capacity` bytes) and returns its length.
    @inline(__always)
    mutating func next(into request: UnsafeMutablePointer<UInt8>) -> Int {
        let pick = Int(rng.next() % idCount)
        let idStart = offsets[pick], idLength = offsets[pick + 1] - idStart
        var length = 0
        request.update(from: prefix.baseAddress!, count: prefix.count)
        length += prefix.count
        (request + length).update(from: flat + idStart, count: idLength)
        length += idLength
        (request + length).update(from: suffix.baseAddress!, count: suffix.count)
        length += suffix.count
        if !bodies.isEmpty {
            let body = bodies[Int(rng.next() % UInt64(bodies.count))]
            (request + length).update(from: body.baseAddress!, count: body.count)
            length += body.count
        }
        return length
    }
}

/// Shared by the main thread and one worker; the worker writes, the main thread reads after joining.
private final class Worker: @unchecked Sendable {
    let spec: LoadSpec
    let index: Int
    let connectionCount: Int
    let usePoll: Bool
    let startAt: UInt64
    let measureFrom: UInt64
    let deadline: UInt64
    var latencies: [UInt64] = []
    var statusCounts: [Int: Int] = [:]
    var non2xx = 0
    var ioErrors = 0
    var firstError: String?
    var sawContentLength = false
    var sawChunked = false
    private var statusLocal = [Int](repeating: 0, count: 600)

    init(spec: LoadSpec, index: Int, connectionCount: Int, usePoll: Bool, startAt: UInt64, measureFrom: UInt64, deadline: UInt64) {
        self.spec = spec
        self.index = index
        self.connectionCount = connectionCount
        self.usePoll = usePoll
        self.startAt = startAt
        self.measureFrom = measureFrom
        self.deadline = deadline
    }

    private func noteError(_ error: any Error) {
        ioErrors += 1
        if firstError == nil { firstError = "\(error)" }
    }

    @inline(__always)
    private func record(_ info: ResponseInfo, t0: UInt64, t1: UInt64, into local: inout [UInt64]) {
        if t0 >= measureFrom {
            local.append(t1 &- t0)
            if info.status >= 0 && info.status < 600 { statusLocal[info.status] += 1 }
            if info.status < 200 || info.status >= 300 { non2xx += 1 }
        }
    }

    func run() {
        var builder = RequestBuilder(spec: spec, seed: spec.seed &+ UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15)
        defer { builder.deallocate() }
        let request = UnsafeMutablePointer<UInt8>.allocate(capacity: builder.capacity)
        defer { request.deallocate() }
        var local: [UInt64] = []
        let expected = Int((spec.durationSeconds + spec.warmupSeconds) * 400_000) * connectionCount / max(spec.connections, 1)
        local.reserveCapacity(min(max(expected, 1 << 14), 1 << 23))

        if usePoll {
            runPolling(&builder, request, &local)
        } else {
            runBlocking(&builder, request, &local)
        }
        latencies = local
        for (code, n) in statusLocal.enumerated() where n > 0 { statusCounts[code] = n }
    }

    /// One blocking connection on this thread: send, wait for the answer, repeat.
    private func runBlocking(_ builder: inout RequestBuilder, _ request: UnsafeMutablePointer<UInt8>, _ local: inout [UInt64]) {
        var connection: UnixHTTPConnection?
        do { connection = try UnixHTTPConnection(path: spec.socketPath) } catch { noteError(error) }
        let now0 = monotonicNanos()
        if startAt > now0 { sleepNanos(startAt - now0) }
        while true {
            let length = builder.next(into: request)
            let t0 = monotonicNanos()
            if t0 >= deadline { break }
            do {
                if connection == nil { connection = try UnixHTTPConnection(path: spec.socketPath) }
                let c = connection!
                try c.send(request, length)
                let info = try c.readResponse()
                c.consume(info.total)
                record(info, t0: t0, t1: monotonicNanos(), into: &local)
                if info.close { connection = nil }
            } catch {
                noteError(error)
                connection = nil
                sleepNanos(1_000_000)
            }
        }
        if let c = connection {
            sawContentLength = c.sawContentLength
            sawChunked = c.sawChunked
        }
    }

    /// Several non-blocking connections on this thread, one request in flight on each, woken by
    /// poll(2) (Glibc's Swift module has no epoll; for a handful of descriptors poll costs the same).
    private func runPolling(_ builder: inout RequestBuilder, _ request: UnsafeMutablePointer<UInt8>, _ local: inout [UInt64]) {
        var connections = [UnixHTTPConnection?](repeating: nil, count: connectionCount)
        var started = [UInt64](repeating: 0, count: connectionCount)
        var done = [Bool](repeating: false, count: connectionCount)
        let fds = UnsafeMutablePointer<pollfd>.allocate(capacity: connectionCount)
        defer { fds.deallocate() }
        for i in 0..<connectionCount { fds[i] = pollfd(fd: -1, events: Int16(POLLIN), revents: 0) }

        func open(_ i: Int) -> Bool {
            do {
                let c = try UnixHTTPConnection(path: spec.socketPath)
                c.setNonBlocking()
                connections[i] = c
                fds[i].fd = c.fd
                return true
            } catch {
                noteError(error)
                return false
            }
        }
        func drop(_ i: Int) {
            if let c = connections[i] {
                sawContentLength = sawContentLength || c.sawContentLength
                sawChunked = sawChunked || c.sawChunked
            }
            connections[i] = nil
            fds[i].fd = -1  // poll ignores negative descriptors
        }
        /// Sends the next request on connection i (reconnecting if needed); false when finished.
        func fire(_ i: Int, _ builder: inout RequestBuilder) -> Bool {
            while true {
                if monotonicNanos() >= deadline { return false }
                if connections[i] == nil && !open(i) {
                    sleepNanos(1_000_000)
                    continue
                }
                let length = builder.next(into: request)
                let t0 = monotonicNanos()
                if t0 >= deadline { return false }
                do {
                    try connections[i]!.send(request, length)
                    started[i] = t0
                    return true
                } catch {
                    noteError(error)
                    drop(i)
                }
            }
        }

        for i in 0..<connectionCount { _ = open(i) }
        let now0 = monotonicNanos()
        if startAt > now0 { sleepNanos(startAt - now0) }
        var active = 0
        for i in 0..<connectionCount {
            if fire(i, &builder) { active += 1 } else { done[i] = true; drop(i) }
        }
        while active > 0 {
            let n = poll(fds, nfds_t(connectionCount), 1000)
            if n < 0 {
                if errno == EINTR { continue }
                noteError(BenchError("poll: \(String(cString: strerror(errno)))"))
                break
            }
            if n == 0 {
                if monotonicNanos() >= deadline + 5_000_000_000 { break }  // answers that never came
                continue
            }
            for i in 0..<connectionCount where fds[i].revents != 0 {
                fds[i].revents = 0
                guard !done[i], let c = connections[i] else { continue }
                do {
                    guard let info = try c.receiveAvailable() else { continue }
                    c.consume(info.total)
                    record(info, t0: started[i], t1: monotonicNanos(), into: &local)
                    if info.close { drop(i) }
                } catch {
                    noteError(error)
                    drop(i)
                }
                if !fire(i, &builder) {
                    done[i] = true
                    active -= 1
                    drop(i)
                }
            }
        }
        for i in 0..<connectionCount { drop(i) }
    }
}

struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    @inline(__always)
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func cpuSecondsOfThisProcess() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

func runLoad(_ spec: LoadSpec) throws -> LoadResult {
    let now = monotonicNanos()
    let startAt = now + 200_000_000  // time for every thread to connect
    let measureFrom = startAt + UInt64(spec.warmupSeconds * 1e9)
    let deadline = measureFrom + UInt64(spec.durationSeconds * 1e9)
    let usePoll = spec.clientThreads > 0
    let threadCount = usePoll ? min(spec.clientThreads, spec.connections) : spec.connections
    let workers = (0..<threadCount).map { t in
        let share = spec.connections / threadCount + (t < spec.connections % threadCount ? 1 : 0)
        return Worker(spec: spec, index: t, connectionCount: share, usePoll: usePoll,
                      startAt: startAt, measureFrom: measureFrom, deadline: deadline)
    }
    var threads: [pthread_t] = []
    for worker in workers {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(worker).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let worker = Unmanaged<Worker>.fromOpaque(raw!).takeRetainedValue()
            worker.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Worker>.fromOpaque(context).release()
            throw BenchError("pthread_create failed (\(rc))")
        }
        threads.append(thread)
    }
    // Client CPU over the measured window only.
    let wait = monotonicNanos()
    if measureFrom > wait { sleepNanos(measureFrom - wait) }
    let cpu0 = cpuSecondsOfThisProcess()
    let w0 = monotonicNanos()
    let wait2 = monotonicNanos()
    if deadline > wait2 { sleepNanos(deadline - wait2) }
    let cpu1 = cpuSecondsOfThisProcess()
    let w1 = monotonicNanos()
    for thread in threads { pthread_join(thread, nil) }

    var all: [UInt64] = []
    all.reserveCapacity(workers.reduce(0) { $0 + $1.latencies.count })
    var result = LoadResult(requests: 0, seconds: spec.durationSeconds, p50ms: 0, p99ms: 0, maxms: 0, non2xx: 0,
                            ioErrors: 0, firstError: nil, statusCounts: [:], framing: "", clientCPUPercent: 0)
    var sawCL = false, sawChunked = false
    for w in workers {
        all.append(contentsOf: w.latencies)
        result.non2xx += w.non2xx
        result.ioErrors += w.ioErrors
        if result.firstError == nil { result.firstError = w.firstError }
        for (k, v) in w.statusCounts { result.statusCounts[k, default: 0] += v }
        sawCL = sawCL || w.sawContentLength
        sawChunked = sawChunked || w.sawChunked
    }
    result.framing = [sawCL ? "content-length" : nil, sawChunked ? "chunked" : nil].compactMap { $0 }.joined(separator: "+")
    result.requests = all.count
    all.sort()
    func percentile(_ p: Double) -> Double {
        guard !all.isEmpty else { return 0 }
        let i = min(all.count - 1, Int((Double(all.count) * p).rounded(.up)) - 1)
        return Double(all[max(0, i)]) / 1e6
    }
    result.p50ms = percentile(0.50)
    result.p99ms = percentile(0.99)
    result.maxms = all.isEmpty ? 0 : Double(all[all.count - 1]) / 1e6
    let wall = Double(w1 - w0) / 1e9
    result.clientCPUPercent = wall > 0 ? (cpu1 - cpu0) / wall * 100 : 0
    return result
}
