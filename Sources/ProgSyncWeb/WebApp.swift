import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdOTP
import Logging
import Mustache
import NIOCore
import NIOPosix
import ProgSyncCore
import ProgSyncReport
import ProgSyncStore

/// The web app for programme officers: server-rendered pages (swift-mustache), a little plain
/// JavaScript for live updates, sessions with CSRF tokens, and edits through the daemon's local
/// write path with the person as author (`web:<name>`).
public final class WebApp: Sendable {
    let backend: any WebBackend
    let configuration: WebConfiguration
    let sessions: SessionStore
    let throttle: LoginThrottle
    let library: MustacheLibrary
    let staticFiles: [String: (type: String, bytes: [UInt8])]
    let logger: Logger
    /// Editors must give a TOTP code: the app is reachable beyond this machine.
    let editorsNeedTOTP: Bool
    /// Keys the CSRF token of people signed in by the trusted proxy header (they have no session).
    let proxyCSRFKey = SessionStore.token()
    let now: @Sendable () -> UInt64

    public init(backend: any WebBackend, configuration: WebConfiguration, editorsNeedTOTP: Bool, logger: Logger,
                now: @escaping @Sendable () -> UInt64 = { Replica.wallClockMilliseconds() }) throws {
        self.backend = backend
        self.configuration = configuration
        self.editorsNeedTOTP = editorsNeedTOTP
        self.logger = logger
        self.now = now
        sessions = SessionStore(idleSeconds: configuration.idleTimeoutSeconds, now: now)
        throttle = LoginThrottle(limit: configuration.maxFailedLogins, windowSeconds: configuration.failedLoginWindowSeconds)
        var library = MustacheLibrary()
        for name in ["header", "footer", "legend", "login", "overview", "activity", "conflicts", "held", "partners", "reports", "message"] {
            try library.register(try Self.resource("templates/\(name).mustache"), named: name)
        }
        self.library = library
        staticFiles = [
            "app.css": ("text/css; charset=utf-8", Array(try Self.resource("static/app.css").utf8)),
            "app.js": ("text/javascript; charset=utf-8", Array(try Self.resource("static/app.js").utf8)),
        ]
    }

    /// Signs every session of a person out (disabled, or a new password).
    public func signOut(user: String) { sessions.removeAll(user: user) }

    /// The `otpauth://` link an authenticator app reads (as a QR code or typed in).
    public static func totpURL(secret: String, label: String) -> String {
        TOTP(secret: secret).createAuthenticatorURL(label: label, issuer: "progsync")
    }

    static func resource(_ path: String) throws -> String {
        guard let url = Bundle.module.resourceURL?.appendingPathComponent(path),
            let data = FileManager.default.contents(atPath: url.path)
        else { throw WebConfigurationError("the web app's resource \(path) is missing") }
        return String(decoding: data, as: UTF8.self)
    }

    /// Adds the app's routes under `prefix` ("" or e.g. "/ui"). `secureCookies`: the browser
    /// reaches this mount over HTTPS (directly, or through the reverse proxy on the socket).
    public func addRoutes<Context: WebRequestContext>(to router: Router<Context>, prefix: String, secureCookies: Bool) {
        let group = router.group(RouterPath(prefix.isEmpty ? "/" : prefix))
        let mount = Mount(base: prefix, secureCookies: secureCookies)
        group.add(middleware: HTMLErrorMiddleware<Context>(app: self, mount: mount))
        group.get("/static/:file") { _, context in try self.staticFile(try context.parameters.require("file")) }
        group.get("/login") { request, _ in self.loginPage(request, mount) }
        group.post("/login") { request, context in try await self.login(request, context, mount) }
        group.post("/logout") { request, context in try await self.logout(request, context, mount) }
        group.get("/") { request, context in try self.overview(request, context, mount, ours: false) }
        group.get("/ours") { request, context in try self.overview(request, context, mount, ours: true) }
        group.get("/activities/:id") { request, context in
            try self.activityPage(request, context, mount, id: try context.parameters.require("id"))
        }
        group.post("/activities/:id") { request, context in
            try await self.edit(request, context, mount, id: try context.parameters.require("id"))
        }
        group.post("/conflicts/:id/resolve") { request, context in
            try await self.resolve(request, context, mount, conflictID: try context.parameters.require("id"))
        }
        group.get("/conflicts") { request, context in try self.conflictsPage(request, context, mount) }
        group.get("/held") { request, context in try self.heldPage(request, context, mount) }
        group.get("/partners") { request, context in try self.partnersPage(request, context, mount) }
        group.get("/reports") { request, context in try self.reportsPage(request, context, mount) }
        group.get("/reports/programme.html") { request, context in try self.reportHTML(request, context, mount) }
        group.get("/reports/programme.csv") { request, context in try self.reportCSV(request, context, mount) }
        group.get("/events") { request, context in try self.events(request, context, mount) }
    }

    struct Mount: Sendable {
        var base: String
        var secureCookies: Bool
    }

    static let sessionCookie = "progsync_session"
    static let languageCookie = "progsync_lang"

    // MARK: Who is asking

    /// The person behind a request, with the CSRF token their forms carry.
    struct Viewer {
        var user: WebUser
        var csrf: String
        var sessionID: String?
        var previousVisit: Int64?
        var isEditor: Bool { user.role == .editor }
    }

    /// The signed-in person, from the trusted proxy header or the session cookie; nil: nobody.
    func viewer(_ request: Request, _ context: some WebRequestContext) throws -> Viewer? {
        if let header = configuration.trustedUserHeader, let field = HTTPField.Name(header),
            configuration.trustedProxies.contains(context.clientAddress ?? "socket"),
            let name = request.headers[field]
        {
            guard let user = try backend.replica.webUser(named: name), !user.disabled else { return nil }
            return Viewer(user: user, csrf: proxyCSRF(name), sessionID: nil, previousVisit: user.lastVisit)
        }
        guard let id = request.cookies[Self.sessionCookie]?.value, let session = sessions.session(id), let name = session.user else {
            return nil
        }
        guard let user = try backend.replica.webUser(named: name), !user.disabled else {
            sessions.remove(id)
            return nil
        }
        return Viewer(user: user, csrf: session.csrf, sessionID: id, previousVisit: session.previousVisit)
    }

    func proxyCSRF(_ name: String) -> String {
        Hex.encode(Array(HMAC<SHA256>.authenticationCode(for: Array(name.utf8), using: SymmetricKey(data: Array(proxyCSRFKey.utf8)))))
    }

    /// A signed-in person or a redirect to the login page (GET) / a refusal (anything else).
    func require(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Viewer {
        if let viewer = try viewer(request, context) { return viewer }
        if request.method == .get {
            throw WebRedirect(location: mount.base + "/login")
        }
        throw WebFailure(.forbidden, "forbidden")
    }

    /// A form's fields, after its CSRF token matched the viewer's.
    func form(_ request: Request, _ context: some WebRequestContext, csrf: String) async throws -> [String: String] {
        let buffer = try await request.body.collect(upTo: 256 << 10)
        let fields = FormData.parse(String(buffer: buffer))
        guard let token = fields["_csrf"], Self.constantTimeEquals(token, csrf) else {
            logger.notice("web: form without a valid CSRF token refused", metadata: ["path": "\(request.uri.path)"])
            throw WebFailure(.forbidden, "csrf")
        }
        return fields
    }

    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    // MARK: Rendering

    func language(_ request: Request) -> ReportLanguage {
        if let asked = request.uri.queryParameters["lang"].flatMap({ ReportLanguage(rawValue: String($0)) }) { return asked }
        return request.cookies[Self.languageCookie].flatMap { ReportLanguage(rawValue: $0.value) } ?? .nl
    }

    /// The data every page has: labels, mount, the person, the language switch.
    func common(_ request: Request, _ mount: Mount, _ viewer: Viewer?, title: String, lang: ReportLanguage) -> [String: Any] {
        let t = Words.table(lang)
        let other: ReportLanguage = lang == .nl ? .en : .nl
        var data: [String: Any] = [
            "t": t, "lang": lang.rawValue, "otherLang": other.rawValue, "base": mount.base,
            "pageTitle": t[title] ?? title, "org": backend.org,
            "langSwitch": mount.base + Self.routePath(request, mount) + "?lang=\(other.rawValue)",
            "statusLabelsJSON": Self.statusLabelsJSON(lang),
        ]
        if let viewer {
            data["user"] = true
            data["name"] = viewer.user.name
            data["csrf"] = viewer.csrf
            data["isEditor"] = viewer.isEditor
            data["roleLabel"] = t[viewer.isEditor ? "roleEditor" : "roleViewer"]
            data["live"] = true
        }
        return data
    }

    /// The request's path inside the mount.
    static func routePath(_ request: Request, _ mount: Mount) -> String {
        let path = request.uri.path
        return path.hasPrefix(mount.base) ? String(path.dropFirst(mount.base.count)) : path
    }

    static func statusLabelsJSON(_ lang: ReportLanguage) -> String {
        var object: [String: JSONValue] = [:]
        for status in StatusCounts.order {
            object[status?.rawValue ?? ""] = .object([
                "label": .string(Words.status(status, lang)), "symbol": .string(status?.symbol ?? "—"),
                "colour": .string(ReportRenderer.colour(status)),
            ])
        }
        return JSONValue.object(object).canonicalString
    }

    func page(_ template: String, _ data: [String: Any], status: HTTPResponse.Status = .ok, lang: ReportLanguage,
              setCookies: [String] = []) -> Response {
        let html = library.render(data, withTemplate: template) ?? "template \(template) failed"
        var headers: HTTPFields = [
            .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
            .contentSecurityPolicy: "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
            HTTPField.Name("X-Content-Type-Options")!: "nosniff",
            HTTPField.Name("Referrer-Policy")!: "same-origin",
        ]
        headers.append(HTTPField(name: .setCookie, value: "\(Self.languageCookie)=\(lang.rawValue); Path=/; SameSite=Strict; Max-Age=31536000"))
        for cookie in setCookies { headers.append(HTTPField(name: .setCookie, value: cookie)) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    func sessionCookie(_ id: String, _ mount: Mount, maxAge: Int? = nil) -> String {
        var cookie = "\(Self.sessionCookie)=\(id); Path=\(mount.base.isEmpty ? "/" : mount.base); HttpOnly; SameSite=Strict"
        if mount.secureCookies { cookie += "; Secure" }
        if let maxAge { cookie += "; Max-Age=\(maxAge)" }
        return cookie
    }

    static func redirect(_ location: String, setCookies: [String] = []) -> Response {
        var headers: HTTPFields = [.location: location]
        for cookie in setCookies { headers.append(HTTPField(name: .setCookie, value: cookie)) }
        return Response(status: .seeOther, headers: headers)
    }

    func staticFile(_ name: String) throws -> Response {
        guard let file = staticFiles[name] else { throw WebFailure(.notFound, "notFound") }
        return Response(status: .ok, headers: [.contentType: file.type, .cacheControl: "max-age=300"],
                        body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }

    // MARK: Login

    func loginPage(_ request: Request, _ mount: Mount, message: String? = nil, status: HTTPResponse.Status = .ok) -> Response {
        let lang = language(request)
        let session = sessions.create(user: nil)
        var data = common(request, mount, nil, title: "login", lang: lang)
        data["csrf"] = session.csrf
        if let message {
            data["message"] = Words.table(lang)[message] ?? message
            data["messageKind"] = "error"
        }
        return page("login", data, status: status, lang: lang, setCookies: [sessionCookie(session.id, mount)])
    }

    func login(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) async throws -> Response {
        guard let id = request.cookies[Self.sessionCookie]?.value, let anonymous = sessions.session(id) else {
            return loginPage(request, mount, message: "csrf", status: .forbidden)
        }
        let fields = try await form(request, context, csrf: anonymous.csrf)
        let name = fields["name"] ?? ""
        let address = context.clientAddress ?? "local-socket"
        let keys = ["name:" + name, "address:" + address]
        let t = now()
        if throttle.isBlocked(keys, now: t) {
            logger.notice("web: login refused, too many failures", metadata: ["user": "\(Self.loggable(name))", "address": "\(address)"])
            return loginPage(request, mount, message: "loginThrottled", status: .tooManyRequests)
        }
        let password = fields["password"] ?? ""
        let user = WebUser.isValidName(name) ? try backend.replica.webUser(named: name) : nil
        // bcrypt is slow by design: Passwords runs it off the cooperative pool.
        let matches = try await Passwords.verify(password, hash: user?.passwordHash ?? Passwords.dummyHash)
        guard let user, matches, !user.disabled else {
            throttle.fail(keys, now: t)
            logger.notice("web: login failed", metadata: ["user": "\(Self.loggable(name))", "address": "\(address)"])
            return loginPage(request, mount, message: "loginFailed", status: .unauthorized)
        }
        if let secret = user.totpSecret {
            guard let code = Int(fields["totp"] ?? ""), Self.totpMatches(secret: secret, code: code, at: t) else {
                throttle.fail(keys, now: t)
                logger.notice("web: login failed (second factor)", metadata: ["user": "\(name)", "address": "\(address)"])
                return loginPage(request, mount, message: "loginFailed", status: .unauthorized)
            }
        } else if user.role == .editor, editorsNeedTOTP {
            logger.notice("web: editor without a second factor refused", metadata: ["user": "\(name)", "address": "\(address)"])
            return loginPage(request, mount, message: "totpRequired", status: .forbidden)
        }
        sessions.remove(id)
        let session = sessions.create(user: user.name, previousVisit: user.lastVisit)
        _ = try backend.replica.updateWebUser(named: user.name) { $0.lastVisit = Int64(t) }
        logger.info("web: signed in", metadata: ["user": "\(user.name)", "address": "\(address)"])
        return Self.redirect(mount.base + "/", setCookies: [sessionCookie(session.id, mount)])
    }

    /// The code of this 30-second step or a neighbour (clocks drift, people type slowly).
    static func totpMatches(secret: String, code: Int, at milliseconds: UInt64) -> Bool {
        let totp = TOTP(secret: secret)
        let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
        return [-30.0, 0, 30].contains { totp.compute(date: date.addingTimeInterval($0)) == code }
    }

    /// A user name as typed, safe for one log field.
    static func loggable(_ name: String) -> String {
        WebUser.isValidName(name) ? name : "(invalid name, \(name.utf8.count) bytes)"
    }

    func logout(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) async throws -> Response {
        let viewer = try require(request, context, mount)
        _ = try await form(request, context, csrf: viewer.csrf)
        if let id = viewer.sessionID { sessions.remove(id) }
        logger.info("web: signed out", metadata: ["user": "\(viewer.user.name)"])
        return Self.redirect(mount.base + "/login", setCookies: [sessionCookie("", mount, maxAge: 0)])
    }
}

/// A page answered with a status and a message (a label key or a text).
struct WebFailure: Error {
    var status: HTTPResponse.Status
    var message: String
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
}

struct WebRedirect: Error {
    var location: String
}

/// Failures as HTML pages (the socket's router would otherwise answer JSON).
struct HTMLErrorMiddleware<Context: WebRequestContext>: RouterMiddleware {
    let app: WebApp
    let mount: WebApp.Mount

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let redirect as WebRedirect {
            return WebApp.redirect(redirect.location)
        } catch let failure as WebFailure {
            return app.messagePage(request, context, mount, status: failure.status, message: failure.message)
        } catch let error as HTTPError {
            return app.messagePage(request, context, mount, status: error.status, message: error.status == .notFound ? "notFound" : "error")
        } catch {
            context.logger.error("web: request failed", metadata: ["error": "\(type(of: error))", "path": "\(request.uri.path)"])
            return app.messagePage(request, context, mount, status: .internalServerError, message: "error")
        }
    }
}

extension WebApp {
    func messagePage(_ request: Request, _ context: some WebRequestContext, _ mount: Mount, status: HTTPResponse.Status, message: String) -> Response {
        let lang = language(request)
        let viewer = try? viewer(request, context)
        var data = common(request, mount, viewer, title: status.code < 500 ? "forbidden" : "error", lang: lang)
        let t = Words.table(lang)
        data["pageTitle"] = "\(status.code) · " + (t["error"] ?? "")
        data["message"] = t[message] ?? message
        data["messageKind"] = "error"
        return page("message", data, status: status, lang: lang)
    }
}

/// `application/x-www-form-urlencoded` bodies and query strings.
enum FormData {
    static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = decode(parts[0])
            let value = parts.count > 1 ? decode(parts[1]) : ""
            if out[key] == nil { out[key] = value }
        }
        return out
    }

    static func decode(_ part: Substring) -> String {
        let spaced = part.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }
}
