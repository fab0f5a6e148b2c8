import Foundation
import ProgSyncCore
import ProgSyncHTTPClient

/// The daemon's local HTTP/JSON API over its Unix socket.
///
/// Every answer is parsed as JSON. A 4xx/5xx answer becomes a ``CLIError`` of kind `.daemon`
/// carrying the daemon's `message`; a socket that is missing or refuses becomes `.unreachable`.
struct LocalAPIClient: Sendable {
    let socketPath: String
    private let client: HTTPClient

    static let baseURL = "http://localhost"
    static let maxResponseDepth = 256

    init(socketPath: String, requestTimeout: Duration = .seconds(60)) throws {
        self.socketPath = socketPath
        do {
            client = try HTTPClient(
                configuration: HTTPClientConfiguration(
                    unixSocketPath: socketPath,
                    connectTimeout: .seconds(5),
                    requestTimeout: requestTimeout,
                    maxResponseBytes: 512 * 1024 * 1024
                )
            )
        } catch let error as HTTPClientError {
            throw CLIError.failure("could not start the HTTP client: \(error.message)")
        }
    }

    func get(_ path: String, query: [(String, String)] = []) async throws -> JSONValue {
        try await send("GET", path, query: query)
    }

    /// Sends one request and returns the parsed JSON answer of a 2xx response.
    func send(
        _ method: String,
        _ path: String,
        query: [(String, String)] = [],
        body: JSONValue? = nil,
        timeout: Duration? = nil
    ) async throws -> JSONValue {
        let response = try await raw(method, path, query: query, body: body?.canonicalBytes, timeout: timeout)
        return try Self.decode(response)
    }

    /// Sends raw bytes (a bundle) and returns the parsed JSON answer.
    func send(bytes: [UInt8], _ method: String, _ path: String, timeout: Duration? = nil) async throws -> JSONValue {
        try Self.decode(try await raw(method, path, body: bytes, timeout: timeout))
    }

    func raw(
        _ method: String,
        _ path: String,
        query: [(String, String)] = [],
        body: [UInt8]? = nil,
        timeout: Duration? = nil
    ) async throws -> HTTPClientResponse {
        var headers = [HTTPHeader("Accept", "application/json")]
        if body != nil { headers.append(HTTPHeader("Content-Type", "application/json")) }
        let request = HTTPClientRequest(
            method: method,
            url: Self.baseURL + path + URLQuery.encode(query),
            headers: headers,
            body: body,
            timeout: timeout
        )
        if !FileManager.default.fileExists(atPath: socketPath) {
            throw CLIError.unreachable(socket: socketPath, detail: "socket \(socketPath) does not exist")
        }
        do {
            return try await client.send(request)
        } catch let error as HTTPClientError {
            switch error.code {
            case .couldNotConnect:
                throw CLIError.unreachable(socket: socketPath, detail: "nothing accepts connections on \(socketPath)")
            case .timedOut:
                throw CLIError.failure("progsyncd did not answer in time (\(error.message))")
            case .responseTooLarge:
                throw CLIError.failure("progsyncd's answer was too large")
            default:
                throw CLIError.failure("request to progsyncd failed: \(error.message)")
            }
        }
    }

    /// The JSON of a 2xx answer, or the daemon's error as a ``CLIError``.
    static func decode(_ response: HTTPClientResponse) throws -> JSONValue {
        let parsed = try? JSONParser.parse(response.body, maxDepth: maxResponseDepth)
        guard (200..<300).contains(response.status) else {
            throw daemonError(status: response.status, body: parsed, rawBody: response.body)
        }
        if response.body.isEmpty { return .object([:]) }
        guard let parsed else {
            throw CLIError.failure("progsyncd sent an answer that is not JSON (HTTP \(response.status))")
        }
        return parsed
    }

    static func daemonError(status: Int, body: JSONValue?, rawBody: [UInt8]) -> CLIError {
        let code = body?["error"]?.stringValue
        var message = body?["message"]?.stringValue ?? code ?? ""
        if message.isEmpty {
            let text = String(decoding: rawBody.prefix(200), as: UTF8.self)
                .split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            message = text.isEmpty ? "HTTP \(status)" : "HTTP \(status): \(text)"
        }
        return CLIError(.daemon, message, status: status, code: code)
    }
}

/// Percent-encoding of path segments and query strings (RFC 3986 unreserved characters kept).
enum URLQuery {
    static func encode(_ items: [(String, String)]) -> String {
        guard !items.isEmpty else { return "" }
        return "?" + items.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }

    static func escape(_ text: String, keeping extra: Set<UInt8> = []) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case _ where extra.contains(byte):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(hex[Int(byte >> 4)])
                out.unicodeScalars.append(hex[Int(byte & 0xF)])
            }
        }
        return out
    }

    /// One path segment, e.g. a record id (`:` and `@` are legal in a segment and kept, so
    /// record ids are never encoded).
    static func segment(_ text: String) -> String {
        escape(text, keeping: [UInt8(ascii: ":"), UInt8(ascii: "@")])
    }
}
