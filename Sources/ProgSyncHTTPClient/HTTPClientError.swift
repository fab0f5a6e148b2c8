public struct HTTPClientError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, coarsely. A struct over a private enum so that codes
    /// can be added without breaking exhaustive switches in callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case couldNotConnect
            case timedOut
            case responseTooLarge
            case tls
            case invalidRequest
            case transport
            case shutdown
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// The host could not be resolved or the connection was refused
        /// (including a Unix socket path that does not exist).
        public static let couldNotConnect = Code(.couldNotConnect)
        /// The connect or request timeout expired.
        public static let timedOut = Code(.timedOut)
        /// The response exceeded ``HTTPClientConfiguration/maxResponseBytes``.
        public static let responseTooLarge = Code(.responseTooLarge)
        /// TLS handshake, certificate verification or key pinning failed.
        public static let tls = Code(.tls)
        /// The request could not be sent as given (bad method, URL or header).
        public static let invalidRequest = Code(.invalidRequest)
        /// Any other transfer failure.
        public static let transport = Code(.transport)
        /// The client was shut down before the request completed.
        public static let shutdown = Code(.shutdown)

        public var description: String {
            switch base {
            case .couldNotConnect: "couldNotConnect"
            case .timedOut: "timedOut"
            case .responseTooLarge: "responseTooLarge"
            case .tls: "tls"
            case .invalidRequest: "invalidRequest"
            case .transport: "transport"
            case .shutdown: "shutdown"
            }
        }
    }

    public var code: Code
    /// One line. From libcurl's error buffer when available; never contains
    /// request bodies.
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = HTTPClientError.oneLine(message)
    }

    public var description: String {
        "HTTPClientError(\(code)): \(message)"
    }

    static func oneLine(_ text: String) -> String {
        var result = ""
        var pendingSpace = false
        for character in text {
            if character.isNewline || character == "\t" {
                pendingSpace = !result.isEmpty
            } else {
                if pendingSpace {
                    result.append(" ")
                    pendingSpace = false
                }
                result.append(character)
            }
        }
        while result.last == " " {
            result.removeLast()
        }
        return result
    }
}
