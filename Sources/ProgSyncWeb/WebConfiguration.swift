import Foundation
import Configuration

/// The web app's settings (`progsync.ui.*`). Off unless `listen` is set; the local socket always
/// carries it under `socketPrefix` for a reverse proxy.
public struct WebConfiguration: Sendable {
    /// "host:port" of the app's own listener; nil: none.
    public var listen: String?
    /// Plain HTTP instead of TLS: allowed only when `listen` is a loopback address.
    public var plainHTTP = false
    /// A certificate and key of the organisation's own; nil: the node's TLS identity.
    public var certificatePath: String?
    public var keyPath: String?
    /// Where the app lives on the local socket.
    public var socketPrefix = "/ui"
    /// A session unused this long is gone.
    public var idleTimeoutSeconds = 1800
    /// Failed logins per name, and per client address, within `failedLoginWindowSeconds`
    /// before further tries are refused until the window passes.
    public var maxFailedLogins = 5
    public var failedLoginWindowSeconds = 900
    /// Activities on one page of the overview.
    public var pageSize = 200
    /// A header naming the signed-in person, set by an SSO proxy; honoured only on requests from
    /// `trustedProxies` (exact addresses; `socket` for the proxy on the local socket), and only
    /// for names `progsync users` knows.
    public var trustedUserHeader: String?
    public var trustedProxies: [String] = []

    public init() {}

    /// Reads the keys under `ui` (the caller scopes the reader to `progsync`):
    /// - `ui.listen`: "host:port" (off by default)
    /// - `ui.plain-http`: plain HTTP, only on a loopback `ui.listen` (false)
    /// - `ui.certificate`, `ui.key`: PEM files (default: the node's TLS identity)
    /// - `ui.socket-prefix`: path prefix on the local socket ("/ui")
    /// - `ui.idle-timeout-seconds` (1800; 1 to 604,800)
    /// - `ui.max-failed-logins` (5), `ui.failed-login-window-seconds` (900)
    /// - `ui.page-size` (200; 10 to 1000)
    /// - `ui.trusted-user-header`, `ui.trusted-proxies` (comma-separated addresses)
    public init(reader config: ConfigReader, int: (String, Int, ClosedRange<Int>) throws -> Int) throws {
        listen = config.string(forKey: "ui.listen")
        plainHTTP = config.bool(forKey: "ui.plain-http", default: false)
        certificatePath = config.string(forKey: "ui.certificate")
        keyPath = config.string(forKey: "ui.key")
        socketPrefix = config.string(forKey: "ui.socket-prefix", default: socketPrefix)
        idleTimeoutSeconds = try int("ui.idle-timeout-seconds", idleTimeoutSeconds, 1...604_800)
        maxFailedLogins = try int("ui.max-failed-logins", maxFailedLogins, 1...1000)
        failedLoginWindowSeconds = try int("ui.failed-login-window-seconds", failedLoginWindowSeconds, 1...86_400)
        pageSize = try int("ui.page-size", pageSize, 10...1000)
        trustedUserHeader = config.string(forKey: "ui.trusted-user-header")
        trustedProxies = (config.string(forKey: "ui.trusted-proxies") ?? "").split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if (certificatePath == nil) != (keyPath == nil) {
            throw WebConfigurationError("ui.certificate and ui.key go together")
        }
        if !socketPrefix.isEmpty, !socketPrefix.hasPrefix("/") || socketPrefix.hasSuffix("/") || socketPrefix.hasPrefix("/v1") {
            throw WebConfigurationError("ui.socket-prefix must start with / and not end with one (and not be under /v1), not \(socketPrefix)")
        }
        if trustedUserHeader != nil, trustedProxies.isEmpty {
            throw WebConfigurationError("ui.trusted-user-header needs ui.trusted-proxies, the addresses it is honoured from")
        }
    }
}

public struct WebConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = "configuration: " + description }
}
