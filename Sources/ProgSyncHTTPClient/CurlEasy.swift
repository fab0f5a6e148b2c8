import CCurl

/// A request checked and turned into what libcurl needs.
struct PreparedRequest: Sendable {
    let method: String
    let url: String
    /// Header lines for CURLOPT_HTTPHEADER, including our overrides.
    let headerLines: [String]
    let body: [UInt8]?
    let timeout: Duration?

    init(_ request: HTTPClientRequest) throws(HTTPClientError) {
        let method = request.method
        guard !method.isEmpty, method.utf8.allSatisfy(isTokenByte) else {
            throw HTTPClientError(code: .invalidRequest, message: "invalid HTTP method")
        }
        let url = request.url
        let lowerURL = url.lowercased()
        guard lowerURL.hasPrefix("http://") || lowerURL.hasPrefix("https://") else {
            throw HTTPClientError(code: .invalidRequest, message: "URL must start with http:// or https://")
        }
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7F }) else {
            throw HTTPClientError(code: .invalidRequest, message: "URL contains spaces or control characters")
        }

        var lines: [String] = []
        lines.reserveCapacity(request.headers.count + 2)
        var hasExpect = false
        var hasContentType = false
        for header in request.headers {
            guard !header.name.isEmpty, header.name.utf8.allSatisfy(isTokenByte) else {
                throw HTTPClientError(code: .invalidRequest, message: "invalid header name")
            }
            guard !header.value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }) else {
                throw HTTPClientError(
                    code: .invalidRequest,
                    message: "header \(header.name) contains CR, LF or NUL"
                )
            }
            let lowered = header.name.lowercased()
            if lowered == "expect" { hasExpect = true }
            if lowered == "content-type" { hasContentType = true }
            // libcurl reads "Name:" as "remove this header" and "Name;" as
            // "send it with an empty value".
            let value = header.value.trimmingHTTPWhitespace()
            lines.append(value.isEmpty ? "\(header.name);" : "\(header.name): \(value)")
        }
        if !hasExpect {
            lines.append("Expect:")  // no "Expect: 100-continue" round trip
        }
        if request.body != nil && !hasContentType {
            lines.append("Content-Type:")  // no application/x-www-form-urlencoded default
        }

        self.method = method
        self.url = url
        self.headerLines = lines
        self.body = request.body
        self.timeout = request.timeout
    }
}

/// RFC 9110 token characters.
private func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"),
        UInt8(ascii: "A")...UInt8(ascii: "Z"),
        UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(byte)
    }
}

extension String {
    func trimmingHTTPWhitespace() -> String {
        let bytes = Array(utf8)
        var start = 0
        var end = bytes.count
        while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        if start == 0 && end == bytes.count { return self }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }
}

func curlErrorString(_ code: UInt32) -> String {
    String(cString: curl_easy_strerror(CURLcode(rawValue: code)))
}

/// Why a transfer did not produce a response.
enum TransferFailure: Error {
    /// Our progress callback stopped it (task cancelled or client shut down).
    case aborted
    case error(HTTPClientError)
}

/// State shared with libcurl's callbacks for one transfer, passed to them as
/// an unretained opaque pointer while its `Transfer` keeps it alive.
private final class TransferContext {
    let maxBodyBytes: Int
    let shouldAbort: () -> Bool
    var body: [UInt8] = []
    /// Header lines of the latest response (reset at each status line).
    var headerLines: [[UInt8]] = []
    var headerBytes = 0
    var bodyTooLarge = false
    var headersTooLarge = false
    var aborted = false

    /// Cap on the header block of one response.
    static let maxHeaderBytes = 256 * 1024

    init(maxBodyBytes: Int, shouldAbort: @escaping () -> Bool) {
        self.maxBodyBytes = maxBodyBytes
        self.shouldAbort = shouldAbort
    }

    func parsedHeaders() -> [HTTPHeader] {
        var headers: [HTTPHeader] = []
        for line in headerLines {
            let text = String(decoding: line, as: UTF8.self)
            if let first = line.first, first == 0x20 || first == 0x09 {
                // Obsolete line folding: continues the previous value.
                if !headers.isEmpty {
                    let more = text.trimmingHTTPWhitespace()
                    headers[headers.count - 1].value += headers[headers.count - 1].value.isEmpty ? more : " " + more
                }
                continue
            }
            guard let colon = text.firstIndex(of: ":") else { continue }
            let name = String(text[..<colon]).trimmingHTTPWhitespace().lowercased()
            let value = String(text[text.index(after: colon)...]).trimmingHTTPWhitespace()
            guard !name.isEmpty else { continue }
            headers.append(HTTPHeader(name: name, value: value))
        }
        return headers
    }
}

/// One libcurl easy handle per transfer, used only by the multi thread. The
/// connection it used stays in the multi handle's cache after it is freed.
final class CurlEasy {
    private let handle: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>

    init() throws(HTTPClientError) {
        guard let handle = curl_easy_init() else {
            throw HTTPClientError(code: .transport, message: "curl_easy_init failed")
        }
        self.handle = handle
        let size = Int(CURL_ERROR_SIZE)
        errorBuffer = .allocate(capacity: size)
        errorBuffer.initialize(repeating: 0, count: size)
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    /// What must stay alive while a transfer runs on the multi handle: the
    /// callbacks' context, the header list and the request body (libcurl's
    /// CURLOPT_POSTFIELDS does not copy).
    final class Transfer {
        fileprivate let context: TransferContext
        fileprivate var headerList: UnsafeMutablePointer<curl_slist>?
        fileprivate var body: UnsafeMutableRawBufferPointer?

        fileprivate init(context: TransferContext) { self.context = context }

        deinit {
            curl_slist_free_all(headerList)
            body?.deallocate()
        }
    }

    /// The easy handle, for adding it to and removing it from a multi handle.
    var rawHandle: UnsafeMutableRawPointer { handle }

    /// Configures the handle for `request`; the caller adds it to a multi
    /// handle and calls ``finish(_:code:configuration:)`` when libcurl is done.
    func start(
        _ request: PreparedRequest,
        configuration: HTTPClientConfiguration,
        shouldAbort: @escaping () -> Bool
    ) -> Result<Transfer, TransferFailure> {
        curl_easy_reset(handle)
        errorBuffer[0] = 0
        let transfer = Transfer(context: TransferContext(maxBodyBytes: configuration.maxResponseBytes, shouldAbort: shouldAbort))
        do throws(HTTPClientError) {
            try configure(request, configuration: configuration, context: transfer.context, headerList: &transfer.headerList)
            if let body = request.body {
                // A non-empty buffer keeps the pointer non-NULL (NULL would make libcurl read stdin).
                let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(body.count, 1), alignment: 1)
                storage.copyBytes(from: body)
                transfer.body = storage
                guard progsync_curl_easy_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)) == CURLE_OK,
                    progsync_curl_easy_setopt_pointer(handle, CURLOPT_POSTFIELDS, storage.baseAddress) == CURLE_OK
                else { throw HTTPClientError(code: .invalidRequest, message: "cannot set the request body") }
            }
        } catch {
            return .failure(.error(error))
        }
        return .success(transfer)
    }

    /// The outcome of a transfer libcurl finished with `code`.
    func finish(_ transfer: Transfer, code: CURLcode, configuration: HTTPClientConfiguration) -> Result<HTTPClientResponse, TransferFailure> {
        // Do not leave a dangling pointer in the handle.
        _ = progsync_curl_easy_setopt_pointer(handle, CURLOPT_POSTFIELDS, nil)
        guard code == CURLE_OK else {
            return .failure(failure(for: code, context: transfer.context, configuration: configuration))
        }
        var status = 0
        _ = progsync_curl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return .success(HTTPClientResponse(status: status, headers: transfer.context.parsedHeaders(), body: transfer.context.body))
    }

    private func configure(
        _ request: PreparedRequest,
        configuration: HTTPClientConfiguration,
        context: TransferContext,
        headerList: inout UnsafeMutablePointer<curl_slist>?
    ) throws(HTTPClientError) {
        let handle = self.handle
        func check(_ code: CURLcode, _ what: String) throws(HTTPClientError) {
            guard code == CURLE_OK else {
                let reason = curlErrorString(code.rawValue)
                let mapped: HTTPClientError.Code =
                    code == CURLE_NOT_BUILT_IN || code == CURLE_UNKNOWN_OPTION ? .transport : .invalidRequest
                throw HTTPClientError(code: mapped, message: "cannot set \(what): \(reason)")
            }
        }
        func set(_ option: CURLoption, _ value: Int, _ what: String) throws(HTTPClientError) {
            try check(progsync_curl_easy_setopt_long(handle, option, value), what)
        }
        func set(_ option: CURLoption, _ value: String, _ what: String) throws(HTTPClientError) {
            guard !value.utf8.contains(0) else {
                throw HTTPClientError(code: .invalidRequest, message: "\(what) contains NUL")
            }
            try check(progsync_curl_easy_setopt_string(handle, option, value), what)
        }

        let opaqueContext = Unmanaged.passUnretained(context).toOpaque()

        try check(progsync_curl_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer), "error buffer")
        try set(CURLOPT_NOSIGNAL, 1, "NOSIGNAL")
        try set(CURLOPT_URL, request.url, "URL")
        try set(CURLOPT_PROTOCOLS_STR, "http,https", "protocols")
        try set(CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1), "HTTP version")
        try set(CURLOPT_CONNECTTIMEOUT_MS, milliseconds(configuration.connectTimeout), "connect timeout")
        try set(CURLOPT_MAXAGE_CONN, max(1, Int(configuration.maxIdleConnectionAge.components.seconds)), "connection age")
        try set(
            CURLOPT_TIMEOUT_MS, milliseconds(request.timeout ?? configuration.requestTimeout), "request timeout")
        if let path = configuration.unixSocketPath {
            try set(CURLOPT_UNIX_SOCKET_PATH, path, "Unix socket path")
        }

        if let tls = configuration.tls {
            if let path = tls.caCertificatePath {
                try set(CURLOPT_CAINFO, path, "CA certificate")
            }
            if let path = tls.clientCertificatePath {
                try set(CURLOPT_SSLCERT, path, "client certificate")
                try set(CURLOPT_SSLCERTTYPE, "PEM", "client certificate type")
            }
            if let path = tls.clientKeyPath {
                try set(CURLOPT_SSLKEY, path, "client key")
                try set(CURLOPT_SSLKEYTYPE, "PEM", "client key type")
            }
            if let pin = tls.pinnedPublicKey {
                try set(CURLOPT_PINNEDPUBLICKEY, pin, "pinned public key")
            }
            try set(CURLOPT_SSL_VERIFYPEER, tls.verifyPeer ? 1 : 0, "peer verification")
            try set(CURLOPT_SSL_VERIFYHOST, tls.verifyHost ? 2 : 0, "host verification")
        }

        try check(progsync_curl_easy_setopt_write_callback(handle) { data, size, count, userdata in
            let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
            let (length, overflow) = size.multipliedReportingOverflow(by: count)
            guard !overflow, length <= context.maxBodyBytes - context.body.count else {
                context.bodyTooLarge = true
                return 0  // short count: libcurl aborts with CURLE_WRITE_ERROR
            }
            if length > 0, let data {
                data.withMemoryRebound(to: UInt8.self, capacity: length) { bytes in
                    context.body.append(contentsOf: UnsafeBufferPointer(start: bytes, count: length))
                }
            }
            return length
        }, "write callback")
        try check(progsync_curl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, opaqueContext), "write data")

        try check(progsync_curl_easy_setopt_header_callback(handle) { data, size, count, userdata in
            let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
            let (length, overflow) = size.multipliedReportingOverflow(by: count)
            guard !overflow, length <= TransferContext.maxHeaderBytes - context.headerBytes else {
                context.headersTooLarge = true
                return 0
            }
            guard length > 0, let data else { return length }
            var line = data.withMemoryRebound(to: UInt8.self, capacity: length) { bytes in
                Array(UnsafeBufferPointer(start: bytes, count: length))
            }
            while let last = line.last, last == 0x0A || last == 0x0D { line.removeLast() }
            if line.starts(with: "HTTP/".utf8) {
                // A new response (after a 1xx or a redirect): keep only the last.
                context.headerLines.removeAll(keepingCapacity: true)
                context.headerBytes = 0
            } else if !line.isEmpty {
                context.headerLines.append(line)
            }
            context.headerBytes += length
            return length
        }, "header callback")
        try check(progsync_curl_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, opaqueContext), "header data")

        try set(CURLOPT_NOPROGRESS, 0, "progress")
        try check(progsync_curl_easy_setopt_xferinfo_callback(handle) { userdata, _, _, _, _ in
            let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
            if context.shouldAbort() {
                context.aborted = true
                return 1  // CURLE_ABORTED_BY_CALLBACK
            }
            return 0
        }, "progress callback")
        try check(progsync_curl_easy_setopt_pointer(handle, CURLOPT_XFERINFODATA, opaqueContext), "progress data")

        for line in request.headerLines {
            guard let appended = curl_slist_append(headerList, line) else {
                throw HTTPClientError(code: .transport, message: "out of memory building headers")
            }
            headerList = appended
        }
        try check(progsync_curl_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList), "headers")

        switch request.method {
        case "HEAD":
            try set(CURLOPT_NOBODY, 1, "HEAD")
        case "GET" where request.body == nil:
            try set(CURLOPT_HTTPGET, 1, "GET")
        default:
            try set(CURLOPT_CUSTOMREQUEST, request.method, "method")
        }
    }

    private func failure(
        for code: CURLcode,
        context: TransferContext,
        configuration: HTTPClientConfiguration
    ) -> TransferFailure {
        if code == CURLE_ABORTED_BY_CALLBACK && context.aborted {
            return .aborted
        }
        if code == CURLE_WRITE_ERROR && context.bodyTooLarge {
            return .error(HTTPClientError(
                code: .responseTooLarge,
                message: "response body exceeds the limit of \(configuration.maxResponseBytes) bytes"))
        }
        if code == CURLE_WRITE_ERROR && context.headersTooLarge {
            return .error(HTTPClientError(
                code: .responseTooLarge,
                message: "response headers exceed the limit of \(TransferContext.maxHeaderBytes) bytes"))
        }
        let detail = String(cString: errorBuffer)
        let message = detail.isEmpty ? curlErrorString(code.rawValue) : detail
        return .error(HTTPClientError(code: Self.errorCode(for: code), message: message))
    }

    static func errorCode(for code: CURLcode) -> HTTPClientError.Code {
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .couldNotConnect
        case CURLE_OPERATION_TIMEDOUT:
            return .timedOut
        case CURLE_SSL_CONNECT_ERROR, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED,
            CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER, CURLE_PEER_FAILED_VERIFICATION,
            CURLE_SSL_ENGINE_INITFAILED, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_SHUTDOWN_FAILED,
            CURLE_SSL_CRL_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH,
            CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CLIENTCERT, CURLE_USE_SSL_FAILED:
            return .tls
        case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL:
            return .invalidRequest
        default:
            return .transport
        }
    }
}

/// Milliseconds for a libcurl timeout, rounded up. Zero or negative becomes
/// 1 ms (libcurl reads 0 as "no timeout").
func milliseconds(_ duration: Duration) -> Int {
    let (seconds, attoseconds) = duration.components
    if seconds < 0 || (seconds == 0 && attoseconds <= 0) {
        return 1
    }
    if seconds >= Int64(Int.max / 1000) - 1 {
        return Int.max / 1000 * 1000
    }
    let perMillisecond: Int64 = 1_000_000_000_000_000
    var ms = seconds * 1000 + attoseconds / perMillisecond
    if attoseconds % perMillisecond > 0 { ms += 1 }
    return Int(max(ms, 1))
}
