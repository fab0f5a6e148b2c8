/// One header field: a name and a value.
public struct HTTPHeader: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    public init(_ name: String, _ value: String) {
        self.init(name: name, value: value)
    }
}

public struct HTTPClientRequest: Sendable {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, or another token.
    public var method: String
    /// Absolute `http://` or `https://` URL. With a Unix socket the host is a
    /// placeholder, e.g. `http://localhost/v1/status`.
    public var url: String
    /// Request headers, sent in order. An empty value is sent as an empty
    /// header (it does not remove a libcurl default).
    public var headers: [HTTPHeader]
    /// Request body; `nil` sends none. A body without a `Content-Type`
    /// header is sent without one (libcurl's form default is suppressed).
    public var body: [UInt8]?
    /// Overrides ``HTTPClientConfiguration/requestTimeout`` (long polls).
    public var timeout: Duration?

    public init(
        method: String = "GET",
        url: String,
        headers: [HTTPHeader] = [],
        body: [UInt8]? = nil,
        timeout: Duration? = nil
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }

    /// Adds a header, keeping any existing one with the same name.
    public mutating func addHeader(_ name: String, _ value: String) {
        headers.append(HTTPHeader(name: name, value: value))
    }
}

public struct HTTPClientResponse: Sendable {
    public var status: Int
    /// Headers of the final response, in order, with lower-cased names.
    public var headers: [HTTPHeader]
    public var body: [UInt8]

    public init(status: Int, headers: [HTTPHeader] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The value of the first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name == wanted }?.value
    }

    /// Every value of the headers with this name (case-insensitive), in order.
    public func headers(named name: String) -> [String] {
        let wanted = name.lowercased()
        return headers.filter { $0.name == wanted }.map(\.value)
    }
}
