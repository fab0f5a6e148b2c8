// A minimal blocking HTTP/1.1 client over a Unix domain socket, made for load generation:
// one socket, one growable receive buffer, no allocation per request on the hot path.
import Glibc

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Monotonic clock in nanoseconds (vDSO, cheap).
@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

func sleepNanos(_ ns: UInt64) {
    var req = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
    var rem = timespec()
    while nanosleep(&req, &rem) == -1 && errno == EINTR { req = rem }
}

/// Where one complete response sits in the connection's buffer (valid until the next read).
struct ResponseInfo {
    var status: Int
    var headerLength: Int  // up to and including the blank line
    var bodyStart: Int
    var bodyEnd: Int  // for chunked: end of the raw chunked data
    var total: Int  // bytes of the whole message
    var chunked: Bool
    var close: Bool  // the server said Connection: close
}

final class UnixHTTPConnection {
    let fd: Int32
    private(set) var buffer: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    private var count = 0  // bytes received and not consumed
    /// Set by the last readResponse: how many responses carried a Content-Length / chunked framing.
    private(set) var sawContentLength = false
    private(set) var sawChunked = false

    init(path: String, bufferSize: Int = 64 * 1024) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket(): \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let maxLength = MemoryLayout.size(ofValue: addr.sun_path) - 1
        guard pathBytes.count <= maxLength else {
            close(fd)
            throw BenchError("socket path too long (\(pathBytes.count) > \(maxLength)): \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw BenchError("connect(\(path)): \(message)")
        }
        self.fd = fd
        self.capacity = bufferSize
        self.buffer = .allocate(capacity: bufferSize)
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    @inline(__always)
    func send(_ bytes: UnsafeRawPointer, _ length: Int) throws {
        var sent = 0
        while sent < length {
            let n = Glibc.send(fd, bytes + sent, length - sent, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {  // non-blocking socket, buffer full: wait
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&p, 1, 100)
                    continue
                }
                throw BenchError("send(): \(String(cString: strerror(errno)))")
            }
            sent += n
        }
    }

    func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send($0.baseAddress!, $0.count) }
    }

    /// Drops the bytes of the response just handled, keeping anything after it.
    @inline(__always)
    func consume(_ n: Int) {
        if n < count { memmove(buffer, buffer + n, count - n) }
        count -= n
    }

    /// Blocks until one complete response is in the buffer and returns where it is.
    /// The caller must call `consume(info.total)` before the next request.
    @inline(__always)
    func readResponse() throws -> ResponseInfo {
        while true {
            if count > 0, let info = try parse() { return info }
            if count == capacity {
                let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
                bigger.update(from: buffer, count: count)
                buffer.deallocate()
                buffer = bigger
                capacity *= 2
            }
            let n = recv(fd, buffer + count, capacity - count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw BenchError("recv(): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw BenchError("connection closed by the server") }
            count += n
        }
    }

    /// Makes the socket non-blocking (for the poll(2) client).
    func setNonBlocking() {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    /// Receives what is available without blocking (the socket must be non-blocking).
    /// Returns the complete response if one is now in the buffer.
    @inline(__always)
    func receiveAvailable() throws -> ResponseInfo? {
        while true {
            if count == capacity {
                let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
                bigger.update(from: buffer, count: count)
                buffer.deallocate()
                buffer = bigger
                capacity *= 2
            }
            let n = recv(fd, buffer + count, capacity - count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                throw BenchError("recv(): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw BenchError("connection closed by the server") }
            count += n
            if count < capacity { break }
        }
        return count > 0 ? try parse() : nil
    }

    /// Reads one response and returns its status and decoded body (not for the hot path).
    func readFullResponse() throws -> (status: Int, body: [UInt8], info: ResponseInfo) {
        let info = try readResponse()
        var body: [UInt8] = []
        if info.chunked {
            var p = info.bodyStart
            while true {
                var size = 0
                while let d = hexDigit(buffer[p]) { size = size * 16 + d; p += 1 }
                while buffer[p] != UInt8(ascii: "\n") { p += 1 }
                p += 1
                if size == 0 { break }
                body.append(contentsOf: UnsafeBufferPointer(start: buffer + p, count: size))
                p += size + 2
            }
        } else {
            body = Array(UnsafeBufferPointer(start: buffer + info.bodyStart, count: info.bodyEnd - info.bodyStart))
        }
        consume(info.total)
        return (info.status, body, info)
    }

    /// Sends one request and reads its answer (not for the hot path).
    func request(_ method: String, _ path: String, body: [UInt8]? = nil, contentType: String = "application/json")
        throws -> (status: Int, body: [UInt8], info: ResponseInfo)
    {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\n"
        if let body { head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        try send(Array(head.utf8))
        if let body { try send(body) }
        return try readFullResponse()
    }

    // MARK: Parsing

    @inline(__always)
    private func hexDigit(_ b: UInt8) -> Int? {
        switch b {
        case 0x30...0x39: Int(b - 0x30)
        case 0x41...0x46: Int(b - 0x41 + 10)
        case 0x61...0x66: Int(b - 0x61 + 10)
        default: nil
        }
    }

    /// Case-insensitive comparison of buffer[start..<start+name.count] with a lower-case ASCII name.
    @inline(__always)
    private func headerNameIs(_ start: Int, _ end: Int, _ name: StaticString) -> Bool {
        let n = name.utf8CodeUnitCount
        guard end - start == n else { return false }
        let p = name.utf8Start
        for i in 0..<n where (buffer[start + i] | 0x20) != p[i] { return false }
        return true
    }

    /// Returns the response if it is complete in the buffer, nil if more bytes are needed.
    private func parse() throws -> ResponseInfo? {
        // Find the end of the header block.
        var headerEnd = -1
        if count >= 4 {
            var i = 0
            while i <= count - 4 {
                if buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
                    headerEnd = i + 4
                    break
                }
                i += 1
            }
        }
        guard headerEnd > 0 else { return nil }
        // Status line: HTTP/1.x NNN
        guard headerEnd >= 12, buffer[0] == UInt8(ascii: "H"), buffer[8] == UInt8(ascii: " ") else {
            throw BenchError("malformed status line")
        }
        let status = Int(buffer[9] &- 0x30) * 100 + Int(buffer[10] &- 0x30) * 10 + Int(buffer[11] &- 0x30)
        var contentLength = -1
        var chunked = false
        var close = false
        // Header lines.
        var line = 0
        while buffer[line] != 10 { line += 1 }
        line += 1
        while line < headerEnd - 2 {
            var colon = line
            while buffer[colon] != UInt8(ascii: ":") && buffer[colon] != 10 { colon += 1 }
            var eol = colon
            while buffer[eol] != 10 { eol += 1 }
            if buffer[colon] == UInt8(ascii: ":") {
                var v = colon + 1
                while buffer[v] == UInt8(ascii: " ") { v += 1 }
                if headerNameIs(line, colon, "content-length") {
                    var n = 0
                    while buffer[v] >= 0x30 && buffer[v] <= 0x39 { n = n * 10 + Int(buffer[v] - 0x30); v += 1 }
                    contentLength = n
                } else if headerNameIs(line, colon, "transfer-encoding") {
                    // "chunked" is the only coding we meet; any mention means chunked framing.
                    var k = v
                    while k + 7 <= eol {
                        if (buffer[k] | 0x20) == UInt8(ascii: "c") && (buffer[k + 1] | 0x20) == UInt8(ascii: "h")
                            && (buffer[k + 6] | 0x20) == UInt8(ascii: "d")
                        {
                            chunked = true
                            break
                        }
                        k += 1
                    }
                } else if headerNameIs(line, colon, "connection") {
                    close = (buffer[v] | 0x20) == UInt8(ascii: "c")
                }
            }
            line = eol + 1
        }
        if chunked {
            sawChunked = true
            // Walk the chunks; nil if incomplete.
            var p = headerEnd
            while true {
                var size = 0
                var digits = 0
                while p < count, let d = hexDigit(buffer[p]) { size = size * 16 + d; p += 1; digits += 1 }
                while p < count && buffer[p] != 10 { p += 1 }
                guard p < count else { return nil }
                if digits == 0 { throw BenchError("malformed chunk size") }
                p += 1
                if size == 0 {
                    // Trailers, then an empty line.
                    while true {
                        var e = p
                        while e < count && buffer[e] != 10 { e += 1 }
                        guard e < count else { return nil }
                        let empty = e == p || (e == p + 1 && buffer[p] == 13)
                        p = e + 1
                        if empty { break }
                    }
                    return ResponseInfo(status: status, headerLength: headerEnd, bodyStart: headerEnd, bodyEnd: p,
                                        total: p, chunked: true, close: close)
                }
                p += size + 2
                guard p <= count else { return nil }
            }
        }
        if contentLength < 0 {
            if status == 204 || status == 304 || (status >= 100 && status < 200) { contentLength = 0 }
            else { throw BenchError("response (status \(status)) without Content-Length or chunked framing") }
        } else {
            sawContentLength = true
        }
        let total = headerEnd + contentLength
        guard total <= count else { return nil }
        return ResponseInfo(status: status, headerLength: headerEnd, bodyStart: headerEnd, bodyEnd: total,
                            total: total, chunked: false, close: close)
    }
}
