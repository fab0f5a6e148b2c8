/// An error the CLI reports to the user: one message and the exit code that goes with it.
///
/// Exit codes: 0 ok; 1 the daemon refused the request or a local step failed; 2 usage error;
/// 3 the daemon could not be reached.
public struct CLIError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Kind: Hashable, Sendable {
        private enum Base: Hashable, Sendable { case daemon, failure, usage, unreachable }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The daemon answered with a 4xx/5xx status.
        public static let daemon = Kind(.daemon)
        /// A local step failed (bad file, unreadable response, …).
        public static let failure = Kind(.failure)
        /// The command line was wrong.
        public static let usage = Kind(.usage)
        /// The socket is missing or refused the connection.
        public static let unreachable = Kind(.unreachable)

        public var exitCode: Int32 {
            switch base {
            case .daemon, .failure: 1
            case .usage: 2
            case .unreachable: 3
            }
        }
    }

    public var kind: Kind
    /// The text after `error: ` on stderr.
    public var message: String
    /// Extra lines printed after the message (hints).
    public var hint: String?
    /// For `.daemon`: the HTTP status and the daemon's `error` code.
    public var status: Int?
    public var code: String?

    public init(_ kind: Kind, _ message: String, hint: String? = nil, status: Int? = nil, code: String? = nil) {
        self.kind = kind
        self.message = message
        self.hint = hint
        self.status = status
        self.code = code
    }

    public var exitCode: Int32 { kind.exitCode }

    public var description: String {
        var text = "error: \(message)"
        if let hint { text += "\n\(hint)" }
        return text
    }

    public static func usage(_ message: String, hint: String? = nil) -> CLIError {
        CLIError(.usage, message, hint: hint)
    }

    public static func failure(_ message: String, hint: String? = nil) -> CLIError {
        CLIError(.failure, message, hint: hint)
    }

    public static func unreachable(socket: String, detail: String) -> CLIError {
        CLIError(
            .unreachable,
            "cannot reach progsyncd: \(detail)",
            hint: "is progsyncd running? start it with: progsyncd  (socket: \(socket))"
        )
    }
}
