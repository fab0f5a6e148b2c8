import Foundation
import ProgSyncCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `GET /v1/records/{id}` is answered on the event loop (`RecordReadFastPath`); everything else
/// goes through the router. Both must give the same answers, and answers on one connection must
/// come back in request order whichever path served them.
@Suite(.serialized, .sharedDaemon())
struct RecordReadFastPathTests {
    /// One raw keep-alive connection to the socket, so requests can be pipelined.
    final class RawConnection {
        let fd: Int32
        var buffer: [UInt8] = []

        init(path: String) throws {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                let bytes = Array(path.utf8)
                raw.copyBytes(from: bytes.prefix(raw.count - 1))
            }
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard rc == 0 else { throw HarnessError("connect to \(path) failed: errno \(errno)") }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(fd) }

        func send(_ text: String) throws {
            let bytes = Array(text.utf8)
            var sent = 0
            while sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { throw HarnessError("write failed: errno \(errno)") }
                sent += n
            }
        }

        /// Reads one response (Content-Length framing); nil when the server closed the connection.
        func response() throws -> (status: Int, headers: [String: String], body: [UInt8])? {
            while true {
                if let end = headerEnd() {
                    let head = String(decoding: buffer[..<end], as: UTF8.self)
                    var lines = head.components(separatedBy: "\r\n")
                    let statusLine = lines.removeFirst().split(separator: " ")
                    var headers: [String: String] = [:]
                    for line in lines {
                        guard let colon = line.firstIndex(of: ":") else { continue }
                        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                    }
                    let length = Int(headers["content-length"] ?? "0") ?? 0
                    if buffer.count >= end + 4 + length {
                        let body = Array(buffer[(end + 4)..<(end + 4 + length)])
                        buffer.removeFirst(end + 4 + length)
                        return (Int(statusLine[1]) ?? 0, headers, body)
                    }
                }
                var chunk = [UInt8](repeating: 0, count: 65536)
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n == 0 { return nil }
                guard n > 0 else { throw HarnessError("read failed: errno \(errno)") }
                buffer += chunk[..<n]
            }
        }

        private func headerEnd() -> Int? {
            guard buffer.count >= 4 else { return nil }
            for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
                return i
            }
            return nil
        }
    }

    static func get(_ path: String, headers: String = "") -> String {
        "GET \(path) HTTP/1.1\r\nHost: localhost\r\n\(headers)\r\n"
    }

    @Test func bothPathsGiveTheSameAnswer() async throws {
        let d = try sharedDaemon()
        let c = try RawConnection(path: d.socketPath)
        // Plain id: the event-loop path. A query string or a percent-encoded id: the router.
        try c.send(Self.get("/v1/records/al1.r01.a01"))
        let fast = try #require(try c.response())
        try c.send(Self.get("/v1/records/al1.r01.a01?view=full"))
        let routed = try #require(try c.response())
        try c.send(Self.get("/v1/records/al1%2Er01%2Ea01"))
        let decoded = try #require(try c.response())
        #expect(fast.status == 200 && routed.status == 200 && decoded.status == 200)
        #expect(fast.body == routed.body && fast.body == decoded.body, "same bytes on both paths")
        #expect(fast.headers["content-type"] == routed.headers["content-type"])
        #expect(fast.headers["date"] != nil)
        let json = try JSONParser.parse(fast.body)
        #expect(fast.body == json.canonicalBytes + [0x0A], "canonical JSON, newline-terminated")
        #expect(json["id"]?.stringValue == "al1.r01.a01")
        #expect(json["versions"]?["title"]?["author"]?.stringValue != nil, "versions name their author")
    }

    @Test func missingAndInvalidIdsGetTheRoutersErrors() async throws {
        let d = try sharedDaemon()
        let c = try RawConnection(path: d.socketPath)
        try c.send(Self.get("/v1/records/al9.r99.a99"))
        let missing = try #require(try c.response())
        #expect(missing.status == 404)
        #expect(try JSONParser.parse(missing.body)["error"]?.stringValue == "not-found")
        try c.send(Self.get("/v1/records/bad%20id"))
        let invalid = try #require(try c.response())
        #expect(invalid.status == 400)
        #expect(try JSONParser.parse(invalid.body)["error"]?.stringValue == "bad-request")
        // A GET with a body is not the plain read: the router sees it (and answers it).
        try c.send("GET /v1/records/al1.r01.a01 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        let withBody = try #require(try c.response())
        #expect(withBody.status == 200)
        #expect(try JSONParser.parse(withBody.body)["id"]?.stringValue == "al1.r01.a01")
    }

    @Test func pipelinedAnswersKeepRequestOrder() async throws {
        let d = try sharedDaemon()
        let id = "e2e.fast.a01"
        let created = try await d.request("PUT", "/v1/records/\(id)", body: [
            "kind": "activity", "result": "e2e.fast", "number": 1, "title": "Snel pad",
        ])
        #expect(created.status == 201, "\(created)")
        let c = try RawConnection(path: d.socketPath)
        let patch = #"{"status":"delayed"}"#
        // Fast, routed (a write), fast-looking but behind the write, routed 404, fast again.
        try c.send(Self.get("/v1/records/\(id)")
            + "PATCH /v1/records/\(id) HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(patch.utf8.count)\r\n\r\n\(patch)"
            + Self.get("/v1/records/\(id)")
            + Self.get("/v1/records/e2e.fast.none")
            + Self.get("/v1/records/\(id)"))
        var answers: [(status: Int, headers: [String: String], body: [UInt8])] = []
        for _ in 0..<5 { answers.append(try #require(try c.response())) }
        #expect(answers.map(\.status) == [200, 200, 200, 404, 200])
        let read = { (i: Int) throws -> String? in try JSONParser.parse(answers[i].body)["fields"]?["status"]?.stringValue }
        #expect(try read(0) == nil, "the first read comes before the write")
        #expect(try JSONParser.parse(answers[1].body)["record"]?["fields"]?["status"]?.stringValue == "delayed")
        #expect(try read(2) == "delayed" && read(4) == "delayed", "every read after the write sees it")
    }

    @Test func connectionCloseGoesThroughTheRouterAndCloses() async throws {
        let d = try sharedDaemon()
        let c = try RawConnection(path: d.socketPath)
        try c.send(Self.get("/v1/records/al1.r01.a01", headers: "Connection: close\r\n"))
        let answer = try #require(try c.response())
        #expect(answer.status == 200)
        #expect(try c.response() == nil, "the server closes the connection")
    }
}
