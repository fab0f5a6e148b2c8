import Dispatch
import Foundation
import Logging
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// The audit trail: what the signed commit log does not show (refusals, held commits, refused
/// TLS connections, operator actions, repairs, membership changes), as an append-only,
/// hash-chained JSON-lines file in the data folder (`AuditChain` describes the format).
///
/// Recording never blocks the caller: events join a queue in memory and a writer of their own
/// appends them, a batch per `write`, then `fdatasync`s the file and replaces the head file.
/// Events that arrive while a batch syncs form the next batch. An event is on disk within one
/// fsync of being recorded; a crash loses at most the batch in flight.
///
/// A write that fails (disk full, I/O error) is cut back off the file, so the chain stays
/// whole, and retried every few seconds; meanwhile events wait in memory, at most
/// `maxPending`, the oldest dropped first and counted in an `events-dropped` line. The daemon
/// goes on serving either way.
///
/// Never record contents: objects are ids (record, commit, hash, address), details are counts
/// and refusal messages, which name fields but never quote values.
final class AuditLog: Sendable {
    struct Event: Sendable {
        var action: String
        var object: String
        var result: String
        var origin: String
        var actor: String
        var reason: String?
        var detail: String?
        /// From the network: identical ones within `floodWindow` are counted, not each written,
        /// so a partner or scanner repeating itself cannot fill the disk.
        var fromNetwork = false
        var time = Replica.wallClockMilliseconds()
        var repeated = 0

        var floodKey: String { [action, object, result, origin, reason ?? ""].joined(separator: "\u{1F}") }

        var fields: [String: JSONValue] {
            var o: [String: JSONValue] = [
                "time": .string(Stamp.iso8601(milliseconds: time)), "action": .string(action), "object": .string(object),
                "result": .string(result), "origin": .string(origin), "actor": .string(actor),
            ]
            if let reason { o["reason"] = .string(reason) }
            if let detail { o["detail"] = .string(String(detail.prefix(AuditLog.maxDetail))) }
            if repeated > 0 { o["repeated"] = .int(Int64(repeated)) }
            return o
        }
    }

    static let maxPending = 10_000
    static let maxDetail = 500
    static let floodWindowMilliseconds: UInt64 = 600_000
    static let retryAfter: DispatchTimeInterval = .seconds(5)

    let path: String
    var headPath: String { path + ".head" }
    let logger: Logger

    private struct Queue {
        var events: [Event] = []
        var draining = false
        var dropped = 0
        var recent: [String: (at: UInt64, suppressed: Int)] = [:]
    }

    /// The file's end as written: touched only on `writer`.
    private final class FileEnd: @unchecked Sendable {
        var fd: Int32
        var size: off_t
        var head: AuditChain.Head
        var failing = false
        init(fd: Int32, size: off_t, head: AuditChain.Head) {
            self.fd = fd
            self.size = size
            self.head = head
        }
    }

    private let queue = Mutex(Queue())
    private let end: FileEnd
    private let writer = DispatchQueue(label: "progsync.audit")
    /// Reading and verifying a long log: never on the writer's queue or the cooperative pool.
    static let readers = DispatchQueue(label: "progsync.audit-read", attributes: .concurrent)

    /// Opens (or creates) the log. A log that no longer matches its head (lines cut off the
    /// end, the last line changed, the head or the log removed) gets an `audit-chain-break`
    /// line saying so, so a restart cannot hide it; a torn last line (a crash mid-write) is cut.
    init(path: String, logger: Logger) throws {
        self.path = path
        self.logger = logger
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ConfigurationError("cannot open the audit log \(path): \(String(cString: strerror(errno)))") }
        var notes: [Event] = []
        var size = lseek(fd, 0, SEEK_END)
        let torn = Self.cutTornTail(fd: fd, size: &size)
        if torn > 0 {
            notes.append(Event(action: "audit-log", object: "audit.jsonl", result: "repaired", origin: "startup", actor: "progsyncd",
                               reason: "torn-tail", detail: "cut \(torn) bytes of an incomplete last line (a crash while writing)"))
        }
        let last = Self.lastLine(fd: fd, size: size)
        let recorded = (try? Data(contentsOf: URL(fileURLWithPath: path + ".head"))).flatMap { try? JSONParser.parse([UInt8]($0)) }
            .flatMap(AuditChain.Head.init(json:))
        var head = AuditChain.Head(seq: 0, hash: AuditChain.genesis)
        if let last {
            let seq = (try? JSONParser.parse(last))?["seq"]?.intValue
            head = AuditChain.Head(seq: seq ?? Self.countLines(fd: fd, size: size), hash: AuditChain.hash(last))
            if seq == nil { notes.append(Self.chainBreak("the last line is damaged")) }
        }
        if let recorded {
            if recorded.seq > head.seq {
                notes.append(Self.chainBreak("the log ended at seq \(head.seq) but its head recorded seq \(recorded.seq) (hash \(recorded.hash)): lines were removed"))
            } else if recorded.seq == head.seq, recorded.hash != head.hash {
                notes.append(Self.chainBreak("line seq \(head.seq) differs from its head (hash \(recorded.hash)): it was edited"))
            }
        } else if last != nil {
            notes.append(Self.chainBreak("the head file \(path).head was missing"))
        }
        end = FileEnd(fd: fd, size: size, head: head)
        if recorded == nil || !notes.isEmpty { writeHead(head) }
        for note in notes { logger.error("audit log: \(note.reason ?? note.action)", metadata: ["detail": "\(note.detail ?? "")"]) }
        for note in notes { record(note) }
    }

    static func chainBreak(_ detail: String) -> Event {
        Event(action: AuditChain.chainBreakAction, object: "audit.jsonl", result: "detected", origin: "startup", actor: "progsyncd", detail: detail)
    }

    // MARK: Recording

    /// Queues an event; returns at once.
    func record(_ event: Event) {
        var event = event
        let start = queue.withLock { q -> Bool in
            if event.fromNetwork {
                let key = event.floodKey
                if let r = q.recent[key], event.time &- r.at < Self.floodWindowMilliseconds {
                    q.recent[key]!.suppressed += 1
                    return false
                }
                event.repeated = q.recent[key]?.suppressed ?? 0
                q.recent[key] = (event.time, 0)
                if q.recent.count > Self.maxPending {
                    q.recent = q.recent.filter { event.time &- $0.value.at < Self.floodWindowMilliseconds }
                    if q.recent.count > Self.maxPending { q.recent.removeAll() }
                }
            }
            q.events.append(event)
            if q.events.count > Self.maxPending {
                q.events.removeFirst()
                q.dropped += 1
            }
            guard !q.draining else { return false }
            q.draining = true
            return true
        }
        if start { writer.async { self.drain() } }
    }

    /// Returns once every event recorded before the call is written (or waiting for a retry).
    func flushed() async {
        await withCheckedContinuation { continuation in writer.async { continuation.resume() } }
    }

    /// Writes what is queued and closes the file (at shutdown).
    func close() {
        writer.sync {
            drain()
            Glibc.close(end.fd)
            end.fd = -1
        }
    }

    private func drain() {
        guard end.fd >= 0 else { return }
        while true {
            let (batch, dropped) = queue.withLock { q -> ([Event], Int) in
                let batch = q.events, dropped = q.dropped
                q.events = []
                q.dropped = 0
                if batch.isEmpty && dropped == 0 { q.draining = false }
                return (batch, dropped)
            }
            if batch.isEmpty && dropped == 0 { return }
            var events = batch
            if dropped > 0 {
                events.insert(Event(action: "audit-log", object: "audit.jsonl", result: "events-dropped", origin: "progsyncd", actor: "progsyncd",
                                    detail: "\(dropped) events were dropped while the log could not be written"), at: 0)
            }
            guard append(events) else {
                // Put them back in front, keep `draining` set, and try again later.
                queue.withLock { q in
                    q.events = batch + q.events
                    q.dropped += dropped
                    let over = q.events.count - Self.maxPending
                    if over > 0 {
                        q.events.removeFirst(over)
                        q.dropped += over
                    }
                }
                writer.asyncAfter(deadline: .now() + Self.retryAfter) { self.drain() }
                return
            }
        }
    }

    /// Appends the events as lines, fsyncs, moves the head. On failure cuts the file back.
    private func append(_ events: [Event]) -> Bool {
        var bytes: [UInt8] = []
        var head = end.head
        for event in events {
            let line = AuditChain.line(event.fields, seq: head.seq + 1, prev: head.hash)
            head = AuditChain.Head(seq: head.seq + 1, hash: AuditChain.hash(line))
            bytes += line
            bytes.append(0x0A)
        }
        var written = 0
        var failure: Int32 = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(end.fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                failure = errno
                break
            }
            written += n
        }
        if failure == 0, fdatasync(end.fd) != 0 { failure = errno }
        guard failure == 0 else {
            _ = ftruncate(end.fd, end.size)
            if !end.failing {
                logger.error("audit log: cannot write; events wait in memory and the write is retried",
                             metadata: ["path": "\(path)", "error": "\(String(cString: strerror(failure)))"])
            }
            end.failing = true
            return false
        }
        if end.failing { logger.notice("audit log: writing again", metadata: ["path": "\(path)"]) }
        end.failing = false
        end.size += off_t(bytes.count)
        end.head = head
        writeHead(head)
        return true
    }

    /// Replaces the head file (write, then rename; not fsynced: a head behind the log after a
    /// power cut is allowed, one ahead is what a cut log looks like).
    private func writeHead(_ head: AuditChain.Head) {
        let temp = headPath + ".tmp"
        let bytes = head.json.canonicalBytes + [0x0A]
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
        if n == bytes.count { rename(temp, headPath) } else { unlink(temp) }
    }

    // MARK: Reading the file back

    private static func cutTornTail(fd: Int32, size: inout off_t) -> Int {
        guard size > 0 else { return 0 }
        var offset = size
        while offset > 0 {
            let from = max(0, offset - 65_536)
            let chunk = read(fd: fd, from: from, count: Int(offset - from))
            if let newline = chunk.lastIndex(of: 0x0A) {
                let cut = from + off_t(newline) + 1
                let torn = Int(size - cut)
                if torn > 0 { _ = ftruncate(fd, cut) }
                size = cut
                return torn
            }
            offset = from
        }
        _ = ftruncate(fd, 0)
        defer { size = 0 }
        return Int(size)
    }

    /// The last line (without its newline) of a file that ends with one.
    private static func lastLine(fd: Int32, size: off_t) -> [UInt8]? {
        guard size > 0 else { return nil }
        var from = size
        var tail: [UInt8] = []
        repeat {
            let start = max(0, from - 65_536)
            tail = read(fd: fd, from: start, count: Int(from - start)) + tail
            from = start
        } while from > 0 && !tail.dropLast().contains(0x0A)
        let body = tail.dropLast()
        let begin = body.lastIndex(of: 0x0A).map { $0 + 1 } ?? body.startIndex
        return Array(body[begin...])
    }

    private static func countLines(fd: Int32, size: off_t) -> Int64 {
        Int64(read(fd: fd, from: 0, count: Int(size)).lazy.filter { $0 == 0x0A }.count)
    }

    private static func read(fd: Int32, from: off_t, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out[got...].withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, from + off_t(got)) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            got += n
        }
        return Array(out.prefix(got))
    }

    /// The file and its head as they are now.
    func contents() throws -> (log: [UInt8], head: AuditChain.Head?) {
        let log = FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []
        let head = FileManager.default.contents(atPath: headPath).flatMap { try? JSONParser.parse([UInt8]($0)) }
            .flatMap(AuditChain.Head.init(json:))
        return (log, head)
    }

    func verify() throws -> AuditChain.Verification {
        let (log, head) = try contents()
        return AuditChain.verify(log, head: head)
    }

    /// Events with seq > `after` and time ≥ `since` (ms), oldest first, at most `limit`.
    func events(since: UInt64?, after: Int64, limit: Int) throws -> (events: [JSONValue], more: Bool) {
        let log = try contents().log
        var out: [JSONValue] = []
        var start = 0
        let sinceText = since.map { Stamp.iso8601(milliseconds: $0) }
        while let newline = log[start...].firstIndex(of: 0x0A) {
            defer { start = newline + 1 }
            guard let event = try? JSONParser.parse(Array(log[start..<newline])), let seq = event["seq"]?.intValue, seq > after else { continue }
            // ISO 8601 UTC times of one width compare as text.
            if let sinceText, (event["time"]?.stringValue ?? "") < sinceText { continue }
            if out.count == limit { return (out, true) }
            out.append(event)
        }
        return (out, false)
    }

    static func onReader<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            readers.async { continuation.resume(with: Result { try body() }) }
        }
    }
}
