import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ProgSyncCore
import ProgSyncStore
import ProgSyncWeb
import ServiceLifecycle
import Synchronization

/// The web app's view of the daemon: the same commit path, change stream and peer state as the
/// local API.
struct DaemonWebBackend: WebBackend {
    let replica: Replica
    let org: String
    let committer: GroupCommitter
    let authors: CommitAuthors
    let events: EventBroadcaster
    let limits: DaemonConfiguration.Limits
    let peerSet: PeerSet
    var peers: [PeerReplicator] { peerSet.replicators }
    let reports: ReconcileReports

    func commit(author: String, writes: [FieldWrite], resolving: Bool) async throws -> SignedCommit {
        try await committer.commit(LocalWrite(author: try authors.commitAuthor(forUser: author), writes: writes, resolving: resolving))
    }

    func subscribe() -> AsyncStream<String>? {
        guard let subscription = events.subscribe(maxSubscribers: limits.maxEventSubscribers, backlog: limits.maxEventBacklog) else {
            return nil
        }
        // A page that falls behind is simply closed: EventSource reconnects and the page keeps
        // what it shows (the server refuses a save on a stale base anyway).
        return AsyncStream { continuation in
            let task = Task {
                for await event in subscription.stream { continuation.yield(event.text) }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    func partners() throws -> [JSONValue] {
        let now = Replica.wallClockMilliseconds()
        let last = try replica.lastLSN
        return peers.map { $0.status.withLock { $0 }.json(now: now, localLastLSN: last) }
    }

    func latestReconcileReport() -> JSONValue? { try? reports.load("latest") }
}

/// The web app's own listener: HTTPS with the node's TLS identity (or `ui.certificate`/`ui.key`),
/// or plain HTTP when `ui.plain-http` is set on a loopback address.
func makeWebListener(_ web: WebApp, _ configuration: DaemonConfiguration, tls identity: NodeTLSIdentity, logger: Logger) throws -> any Service {
    let ui = configuration.ui
    guard let listen = ui.listen else { throw ConfigurationError("ui.listen is not set") }
    let (host, port) = try splitHostPort(listen)
    if ui.plainHTTP, !isLoopback(host: host) {
        throw ConfigurationError("ui.plain-http is allowed only on a loopback ui.listen, not \(host)")
    }
    let router = Router(context: WebListenerContext.self)
    web.addRoutes(to: router, prefix: "", secureCookies: !ui.plainHTTP)
    let running: @Sendable (any Channel) async -> Void = { channel in
        logger.info("web app listening", metadata: ["address": "\(channel.localAddress?.description ?? listen)", "tls": "\(!ui.plainHTTP)"])
    }
    let address = BindAddress.hostname(host, port: port)
    if ui.plainHTTP {
        return Application(router: router, configuration: .init(address: address, serverName: nil), onServerRunning: running, logger: logger)
    }
    let certificatePEM: String, keyPEM: String
    if let certificatePath = ui.certificatePath, let keyPath = ui.keyPath {
        guard let c = FileManager.default.contents(atPath: certificatePath), let k = FileManager.default.contents(atPath: keyPath) else {
            throw ConfigurationError("cannot read ui.certificate \(certificatePath) or ui.key \(keyPath)")
        }
        certificatePEM = String(decoding: c, as: UTF8.self)
        keyPEM = String(decoding: k, as: UTF8.self)
    } else {
        certificatePEM = identity.certificatePEM
        keyPEM = identity.privateKeyPEM
    }
    let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
    let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
    var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
    tls.minimumTLSVersion = .tlsv12
    return Application(router: router, server: try .tls(.http1(), tlsConfiguration: tls),
                       configuration: .init(address: address, serverName: nil), onServerRunning: running, logger: logger)
}

/// Builds the web app on the daemon's parts: user administration and the app on the socket,
/// and the app's own listener when `ui.listen` is set.
func addWebApp(_ api: LocalAPI, to router: Router<LocalRequestContext>, services: inout [any Service],
               _ configuration: DaemonConfiguration, tls: NodeTLSIdentity, logger: Logger) throws {
    let backend = DaemonWebBackend(
        replica: api.replica, org: api.node.org, committer: api.committer, authors: api.authors, events: api.events,
        limits: api.limits, peerSet: api.peerSet, reports: api.reports)
    let web = try WebApp(backend: backend, configuration: configuration.ui, editorsNeedTOTP: editorsNeedTOTP(configuration.ui), logger: logger)
    WebUsersAPI(replica: api.replica, limits: api.limits, logger: logger, signOut: { web.signOut(user: $0) }).addRoutes(to: router)
    if !configuration.ui.socketPrefix.isEmpty {
        // Behind a reverse proxy that serves HTTPS: cookies are Secure.
        web.addRoutes(to: router, prefix: configuration.ui.socketPrefix, secureCookies: true)
    }
    if configuration.ui.listen != nil {
        services.append(try makeWebListener(web, configuration, tls: tls, logger: logger))
    }
}

/// Editors need a second factor when the app's listener is reachable from other machines,
/// unless people sign in through the trusted SSO proxy header.
func editorsNeedTOTP(_ ui: WebConfiguration) -> Bool {
    guard let listen = ui.listen, ui.trustedUserHeader == nil else { return false }
    guard let host = try? splitHostPort(listen).host else { return true }
    return !isLoopback(host: host)
}

extension LocalRequestContext: WebRequestContext {
    /// The socket has no client address: a reverse proxy in front of it is the client.
    var clientAddress: String? { nil }
}

// MARK: Users (`progsync users`)

/// `GET /v1/users`, `POST /v1/users`, `POST /v1/users/{name}` on the local socket: whoever may
/// use the socket administers the web app's people. Password hashes never leave the daemon.
struct WebUsersAPI: Sendable {
    let replica: Replica
    let limits: DaemonConfiguration.Limits
    let logger: Logger
    /// Signs a disabled user, or one with a new password, out at once.
    let signOut: @Sendable (String) -> Void

    func addRoutes(to router: Router<LocalRequestContext>) {
        router.get("/v1/users") { _, _ in try self.list() }
        router.post("/v1/users") { request, _ in try await self.add(request) }
        router.post("/v1/users/:name") { request, context in try await self.change(request, name: try context.parameters.require("name")) }
    }

    func json(_ user: WebUser) -> JSONValue {
        .object([
            "name": .string(user.name), "role": .string(user.role.rawValue), "disabled": .bool(user.disabled),
            "totp": .bool(user.totpSecret != nil), "created": .string(Stamp.iso8601(milliseconds: UInt64(user.created))),
            "lastVisit": user.lastVisit.map { .string(Stamp.iso8601(milliseconds: UInt64($0))) } ?? .null,
        ])
    }

    func list() throws -> Response {
        JSONResponse.make(.object(["users": .array(try replica.webUsers().map(json))]))
    }

    func body(_ request: Request) async throws -> JSONValue {
        let buffer = try await request.body.collect(upTo: 64 << 10)
        guard let value = try? JSONParser.parse(Array(buffer.readableBytesView), maxDepth: 4), value.objectValue != nil else {
            throw APIError.badRequest("body must be a JSON object")
        }
        return value
    }

    static func checkPassword(_ password: String) throws {
        if let problem = Passwords.problem(password) { throw APIError.invalid(problem) }
    }

    /// A new TOTP secret: 20 random letters and digits (HummingbirdOTP keys HMAC with its bytes).
    static func newTOTPSecret() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var generator = SystemRandomNumberGenerator()
        return String((0..<20).map { _ in alphabet[Int(generator.next(upperBound: UInt32(alphabet.count)))] })
    }

    /// `{"name", "role", "password", "totp": bool}`; answers the user, and the authenticator URL when a TOTP secret was made.
    func add(_ request: Request) async throws -> Response {
        let b = try await body(request)
        guard let name = b["name"]?.stringValue, WebUser.isValidName(name) else {
            throw APIError.invalid("name: 1–64 of a-z A-Z 0-9 . _ - @")
        }
        guard let role = b["role"]?.stringValue.flatMap(WebUser.Role.init(rawValue:)) else { throw APIError.invalid("role: viewer or editor") }
        guard let password = b["password"]?.stringValue else { throw APIError.invalid("password: required") }
        try Self.checkPassword(password)
        if let totp = b["totp"], totp.boolValue == nil { throw APIError.badRequest("totp must be true or false") }
        let secret = b["totp"]?.boolValue == true ? Self.newTOTPSecret() : nil
        let user = WebUser(name: name, role: role, passwordHash: try await Passwords.hash(password), totpSecret: secret,
                           created: Int64(Replica.wallClockMilliseconds()))
        guard try replica.addWebUser(user) else { throw APIError(.conflict, "exists", "a user \(name) exists already") }
        logger.info("web user added", metadata: ["user": "\(name)", "role": "\(role.rawValue)"])
        return JSONResponse.make(status: .created, answer(user, secret: secret))
    }

    func answer(_ user: WebUser, secret: String?) -> JSONValue {
        guard case .object(var o) = json(user) else { return json(user) }
        if let secret {
            o["totpURL"] = .string(WebApp.totpURL(secret: secret, label: user.name))
        }
        return .object(o)
    }

    /// `{"disabled": bool}`, `{"password": …}`, `{"role": …}`, `{"totp": true|false}`, in any combination.
    func change(_ request: Request, name: String) async throws -> Response {
        let b = try await body(request)
        // A field of the wrong type is an error, never silently left unchanged.
        for key in ["disabled", "totp"] where b[key] != nil && b[key]?.boolValue == nil {
            throw APIError.badRequest("\(key) must be true or false")
        }
        for key in ["password", "role"] where b[key] != nil && b[key]?.stringValue == nil {
            throw APIError.badRequest("\(key) must be a string")
        }
        let password = b["password"]?.stringValue
        if let password { try Self.checkPassword(password) }
        let hash = try await password.asyncMap(Passwords.hash)
        var role: WebUser.Role?
        if let text = b["role"] {
            guard let parsed = text.stringValue.flatMap(WebUser.Role.init(rawValue:)) else { throw APIError.invalid("role: viewer or editor") }
            role = parsed
        }
        // totp true: a new secret; false: none; absent: unchanged.
        let totp = b["totp"]?.boolValue
        let newSecret: String? = totp == true ? Self.newTOTPSecret() : nil
        var changed: WebUser?
        let found = try replica.updateWebUser(named: name) { user in
            if let disabled = b["disabled"]?.boolValue { user.disabled = disabled }
            if let hash { user.passwordHash = hash }
            if let role { user.role = role }
            if totp != nil { user.totpSecret = newSecret }
            changed = user
        }
        guard found, let changed else { throw APIError.notFound("no user \(name)") }
        if changed.disabled || hash != nil { signOut(name) }
        logger.info("web user changed", metadata: ["user": "\(name)", "disabled": "\(changed.disabled)", "password": "\(hash != nil)"])
        return JSONResponse.make(answer(changed, secret: newSecret))
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let self else { return nil }
        return try await transform(self)
    }
}
