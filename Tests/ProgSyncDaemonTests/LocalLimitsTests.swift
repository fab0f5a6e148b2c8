import Foundation
import ProgSyncCore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Greedy and slow clients of the local socket: a client that pipelines reads and never reads the
/// answers, more event streams than allowed, and an event reader that falls behind.
@Suite(.serialized)
struct LocalLimitsTests {
    /// The daemon's resident memory, in bytes.
    static func residentBytes(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    @Test func pipeliningClientThatNeverReadsCannotGrowTheDaemon() async throws {
        let d = try await DaemonHarness.started()
        defer { d.cleanup() }
        let pid = try #require(d.pid)
        let ids = ["al1.r01.a01", "al1.r01.a02"]
        let requests = ids.map { Array(RecordReadFastPathTests.get("/v1/records/\($0)").utf8) }
        #expect(requests[0].count == requests[1].count)
        // Warm up both paths so the baseline includes what any client costs.
        for id in ids { #expect(try await d.request("GET", "/v1/records/\(id)").status == 200) }
        #expect(try await d.request("GET", "/v1/records/\(ids[0])?view=full").status == 200)
        let c = try RecordReadFastPathTests.RawConnection(path: d.socketPath)
        let before = Self.residentBytes(pid)

        // 4 MiB of pipelined reads, written without reading anything back, until the daemon stops
        // taking them (a write blocked for a second) or all are written.
        var burst: [UInt8] = []
        for i in 0..<1000 { burst += requests[i % 2] }
        let total = 4 << 20
        var written = 0
        _ = fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK)
        writing: while written < total {
            let offset = written % burst.count
            let n = burst[offset...].withUnsafeBytes { write(c.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                written += n
                continue
            }
            guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK else { throw HarnessError("write failed: errno \(errno)") }
            var waiting = pollfd(fd: c.fd, events: Int16(POLLOUT), revents: 0)
            if poll(&waiting, 1, 1000) == 0 { break writing }
        }
        try await Task.sleep(for: .milliseconds(500))
        let after = Self.residentBytes(pid)
        print("pipelining: \(written) of \(total) request bytes taken; daemon RSS \(before >> 20) MiB -> \(after >> 20) MiB")
        #expect(written < total, "the daemon kept reading requests from a client that reads no answers")
        // Measured: +1 to +2 MiB now; the fast path that ignored writability took ~0.2 to 1 MB of
        // requests and grew by 8 to 25 MiB.
        #expect(after - before < 6 << 20, "daemon memory grew by \((after - before) >> 20) MiB for one client that does not read")

        // Now it reads: every request it managed to send gets its answer, in order.
        _ = fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) & ~O_NONBLOCK)
        let complete = written / requests[0].count
        let partial = written % requests[0].count
        for i in 0..<complete {
            let answer = try #require(try c.response(), "answer \(i) of \(complete) missing")
            guard answer.status == 200, try JSONParser.parse(answer.body)["id"]?.stringValue == ids[i % 2] else {
                Issue.record("answer \(i): HTTP \(answer.status) \(String(decoding: answer.body.prefix(200), as: UTF8.self))")
                return
            }
        }
        if partial > 0 {
            try c.send(String(decoding: requests[complete % 2][partial...], as: UTF8.self))
            let last = try #require(try c.response())
            let lastID = try JSONParser.parse(last.body)["id"]?.stringValue
            #expect(last.status == 200 && lastID == ids[complete % 2])
        }
        #expect(try await d.request("GET", "/v1/status").status == 200)
    }

    @Test func badLimitValuesAreConfigurationErrors() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pslim-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (key, value, message) in [
            ("PROGSYNC_PEERS_MAX_CONNECTIONS", "0", "peers.max-connections must be from 1 to 100000, not 0"),
            ("PROGSYNC_PEERS_HANDSHAKE_TIMEOUT_SECONDS", "soon", "peers.handshake-timeout-seconds must be a whole number, not soon"),
            ("PROGSYNC_LIMITS_MAX_EVENT_BACKLOG", "99999999999999999999", "limits.max-event-backlog must be a whole number"),
            ("PROGSYNC_PEERS_MAX_PUSH_BYTES", "1024", "peers.max-push-bytes must be from 65536"),
        ] {
            let result = try await runProcess(Binaries.progsyncd, ["--data-dir", folder, "--empty"],
                                              environment: Binaries.cleanEnvironment([key: value]), timeout: 20)
            #expect(result.exitCode != 0 && !result.signalled, "\(key)=\(value): \(result)")
            #expect(result.stderr.contains(message), "\(key)=\(value): \(result.stderr)")
        }
    }

    @Test func eventStreamsAreCappedAndAResumedStreamMissesNothing() async throws {
        let d = try await DaemonHarness.started(environment: [
            "PROGSYNC_LIMITS_MAX_EVENT_SUBSCRIBERS": "2", "PROGSYNC_LIMITS_MAX_EVENT_BACKLOG": "4",
        ])
        defer { d.cleanup() }

        // Two streams are allowed, a third is refused with the JSON error shape.
        let first = try EventStream(path: d.socketPath)
        let second = try EventStream(path: d.socketPath)
        let third = try RecordReadFastPathTests.RawConnection(path: d.socketPath)
        try third.send(RecordReadFastPathTests.get("/v1/events"))
        let refused = try #require(try third.response())
        #expect(refused.status == 503)
        #expect(try JSONParser.parse(refused.body)["error"]?.stringValue == "busy")
        let badID = try RecordReadFastPathTests.RawConnection(path: d.socketPath)
        try badID.send(RecordReadFastPathTests.get("/v1/events", headers: "Last-Event-ID: -1\r\n"))
        let badAnswer = try #require(try badID.response())
        let badError = try JSONParser.parse(badAnswer.body)["error"]?.stringValue
        #expect(badAnswer.status == 400 && badError == "bad-request")

        // The first stream's reader keeps up, the second's does not read at all. Three imports
        // make commits with big events, more than the socket buffers and a backlog of 4 hold.
        let target = Mutex<Int?>(nil)
        let keepingUp = Task.detached { [first] in
            try first.readEvents(until: { ids in target.withLock { $0.map { ids.count >= $0 } ?? false } }, timeout: 30)
        }
        var commits = 0
        for round in 0..<3 {
            let records: [JSONValue] = (1...1000).map { i in
                ["id": .string("e2e.slow\(round).a\(i)"), "kind": "activity", "result": .string("e2e.slow\(round)"), "number": .int(Int64(i)),
                 "title": .string("Langzame lezer \(round) \(i)"), "status": "on-track"]
            }
            let imported = try await d.request("POST", "/v1/import", body: ["records": .array(records)])
            #expect(imported.status == 200, "\(imported)")
            commits += Int(imported.json["commits"]?.intValue ?? 0)
        }
        #expect(commits >= 10)
        target.withLock { [commits] in $0 = commits }
        let live = try await keepingUp.value
        #expect(live.count == commits && !first.ended, "the reader that keeps up gets every event: \(live.count) of \(commits)")
        let start = try #require(live.first) - 1

        // The slow reader now reads: contiguous events from the start, then the daemon's close.
        let cut = try second.readEvents(until: { _ in false }, timeout: 20)
        #expect(second.ended, "a reader that fell behind is cut off, not buffered for")
        #expect(second.text.contains("fell too far behind"))
        #expect(cut.count < commits)
        #expect(cut == Array((start + 1)...(start + cut.count)), "no event skipped before the cut: \(cut)")

        // It reconnects with the last id it saw and gets the rest from the log.
        let resumed = try EventStream(path: d.socketPath, lastEventID: cut.last ?? start)
        let rest = try resumed.readEvents(until: { $0.last == start + commits }, timeout: 20)
        #expect(cut + rest == Array((start + 1)...(start + commits)), "resumed: \(rest)")
        // And then it is live again.
        #expect(try await d.request("PATCH", "/v1/records/e2e.slow0.a1", body: ["status": "delayed"]).status == 200)
        let next = try resumed.readEvents(until: { !$0.isEmpty }, timeout: 10)
        #expect(next == [start + commits + 1])
    }
}

/// A raw `GET /v1/events` connection that reads only when asked.
final class EventStream: @unchecked Sendable {
    let connection: RecordReadFastPathTests.RawConnection
    var text = ""
    var closed = false
    private var seen = 0

    /// The server closed the connection or ended the response (the last chunk of a chunked body).
    var ended: Bool { closed || text.utf8.reversed().starts(with: "\r\n0\r\n\r\n".utf8.reversed()) }

    init(path: String, lastEventID: Int? = nil) throws {
        connection = try RecordReadFastPathTests.RawConnection(path: path)
        try connection.send(RecordReadFastPathTests.get("/v1/events", headers: lastEventID.map { "Last-Event-ID: \($0)\r\n" } ?? ""))
        _ = try readEvents(until: { _ in self.text.contains(": progsync events") }, timeout: 10)
        guard text.contains(" 200 ") else { throw HarnessError("event stream not opened: \(text.prefix(300))") }
    }

    /// Reads until `done` holds for the event ids read by this call, the server closes, or the
    /// timeout passes.
    func readEvents(until done: ([Int]) -> Bool, timeout: Double) throws -> [Int] {
        let deadline = Date().addingTimeInterval(timeout)
        var ids: [Int] = []
        while !done(ids), !ended, Date() < deadline {
            var waiting = pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&waiting, 1, 100) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(connection.fd, $0.baseAddress, $0.count) }
            if n <= 0 { closed = true; break }
            text += String(decoding: chunk[..<n], as: UTF8.self)
            // Whole lines only: an event is written in one chunk, but reads may split it. Split
            // bytes, not characters: "\r\n" of the chunked framing is one Character.
            let lines = text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false)
            let complete = lines.dropLast()
            let fresh = complete.dropFirst(seen)
            seen = complete.count
            ids += fresh.compactMap { line in line.starts(with: "id: ".utf8) ? Int(String(decoding: line.dropFirst(4), as: UTF8.self)) : nil }
        }
        return ids
    }
}
