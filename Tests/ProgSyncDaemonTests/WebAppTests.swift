import Foundation
import HummingbirdOTP
import Logging
import ProgSyncCore
@testable import ProgSyncDaemon
import ProgSyncHTTPClient
import ProgSyncStore
@testable import ProgSyncWeb
import Testing

/// The web app end to end on an in-process daemon, through its mount on the local socket (`/ui`),
/// as a browser would use it: cookies, forms with CSRF tokens, redirects.
@Suite(.serialized)
struct WebAppTests {
    /// A node of org `politie` (not coordinating: its editors may edit only politie's records),
    /// and a coordinator partner `jenv` whose commits it receives, as from a partner.
    struct Node {
        var daemon: Daemon
        var run: Task<Void, any Error>
        var configuration: DaemonConfiguration
        var folder: URL
        var partner: Replica

        /// Commits `writes` on the partner and hands them to this node, as replication would.
        func partnerCommits(_ writes: [FieldWrite]) throws {
            let before = try daemon.replica.versionVector[partner.nodeID] ?? 0
            try partner.commitLocal(author: "jenv-officer", writes: writes)
            let new = try partner.commits(afterLSN: 0, limit: 10_000).map(\.commit).filter { $0.commit.seq > before }
            _ = try daemon.replica.apply(new)
        }
    }

    static func startNode(_ configure: (inout DaemonConfiguration) -> Void = { _ in }) throws -> Node {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("psweb-\(UUID().uuidString.prefix(8))")
        let data = folder.appendingPathComponent("data").path
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let me = try NodeFiles.createIdentity(at: data + "/identity.json", org: "politie", name: "web-test")
        let jenv = try NodeFiles.createIdentity(at: folder.path + "/jenv-identity.json", org: "jenv", name: "jenv")
        let registry = PartnerRegistry(nodes: [
            PartnerRegistry.Node(org: "politie", publicKey: me.identity.publicKey, name: "web-test"),
            PartnerRegistry.Node(org: "jenv", publicKey: jenv.identity.publicKey, name: "jenv"),
        ], coordinators: ["jenv"])
        try (registry.json.prettyString() + "\n").write(toFile: data + "/registry.json", atomically: true, encoding: .utf8)
        var configuration = DaemonConfiguration(dataDirectory: data)
        configuration.reconcileSchedule = ReconcileSchedule("off")!
        configuration.loadSampleData = false
        configure(&configuration)
        var logger = Logger(label: "progsyncd-web-test")
        logger.logLevel = .warning
        let daemon = try buildDaemon(configuration: configuration, logger: logger)
        let run = Task { try await daemon.run() }
        let partner = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: jenv.identity, org: "jenv", registry: registry))
        let node = Node(daemon: daemon, run: run, configuration: configuration, folder: folder, partner: partner)
        try node.partnerCommits([
            FieldWrite(record: "al1", field: "kind", value: "action-line"), FieldWrite(record: "al1", field: "number", value: 1),
            FieldWrite(record: "al1", field: "title", value: "Basis"), FieldWrite(record: "al1", field: "owner", value: "jenv"),
            FieldWrite(record: "al1.r01", field: "kind", value: "result"), FieldWrite(record: "al1.r01", field: "actionLine", value: "al1"),
            FieldWrite(record: "al1.r01", field: "number", value: 1), FieldWrite(record: "al1.r01", field: "title", value: "Signalering"),
            FieldWrite(record: "al1.r01", field: "owner", value: "jenv"),
            FieldWrite(record: "al1.r01.a01", field: "kind", value: "activity"), FieldWrite(record: "al1.r01.a01", field: "result", value: "al1.r01"),
            FieldWrite(record: "al1.r01.a01", field: "number", value: 1), FieldWrite(record: "al1.r01.a01", field: "title", value: "Training"),
            FieldWrite(record: "al1.r01.a01", field: "owner", value: "jenv"),
            FieldWrite(record: "p.a1", field: "kind", value: "activity"), FieldWrite(record: "p.a1", field: "result", value: "al1.r01"),
            FieldWrite(record: "p.a1", field: "number", value: 90), FieldWrite(record: "p.a1", field: "title", value: "Politie-activiteit"),
            FieldWrite(record: "p.a1", field: "owner", value: "politie"),
        ])
        return node
    }

    /// Runs `body` on a started node (its socket answering), with an admin client and a browser.
    static func withNode(_ configure: (inout DaemonConfiguration) -> Void = { _ in },
                         _ body: (Node, InProcessClient, WebBrowser) async throws -> Void) async throws {
        let node = try startNode(configure)
        defer { try? FileManager.default.removeItem(at: node.folder) }
        defer { node.run.cancel() }
        let admin = try InProcessClient(socketPath: node.configuration.socketPath)
        defer { admin.shutdown() }
        #expect(await eventually(timeout: 20) { (try? await admin.send("GET", "/v1/status").0) == 200 })
        let browser = try WebBrowser(socketPath: node.configuration.socketPath)
        defer { browser.shutdown() }
        try await body(node, admin, browser)
    }

    @Test func loginEditRulesCSRFAndLogout() async throws {
        try await Self.withNode { node, admin, browser in
            let (daemon, configuration) = (node.daemon, node.configuration)

            // Users: bad input is refused with a clear message; a taken name is a conflict.
            #expect(try await admin.send("POST", "/v1/users", ["name": "anna", "role": "editor", "password": "short"]).0 == 422)
            #expect(try await admin.send("POST", "/v1/users", ["name": "a b", "role": "editor", "password": "long enough password"]).0 == 422)
            #expect(try await admin.send("POST", "/v1/users", ["name": "anna", "role": "boss", "password": "long enough password"]).0 == 422)
            #expect(try await admin.send("POST", "/v1/users", ["name": "anna", "role": "editor", "password": "anna's long password"]).0 == 201)
            #expect(try await admin.send("POST", "/v1/users", ["name": "anna", "role": "editor", "password": "anna's long password"]).0 == 409)
            #expect(try await admin.send("POST", "/v1/users", ["name": "vera", "role": "viewer", "password": "vera's long password"]).0 == 201)
            let list = try await admin.send("GET", "/v1/users").1
            #expect(list["users"]?.arrayValue?.count == 2)
            #expect(!list.canonicalString.contains("$2"), "a password hash left the daemon")


            // Not signed in: pages send you to the login page; a proxy's user header counts for nothing
            // unless configured.
            #expect(try await browser.get("/ui/").status == 303)
            #expect(try await browser.send("GET", "/ui/", headers: ["X-Remote-User": "anna"]).status == 303)
            // A failed login says so and is logged; the right password signs in.
            #expect(try await browser.login("anna", "wrong password here").status == 401)
            #expect(try await browser.login("anna", "anna's long password").status == 303)
            let overview = try await browser.get("/ui/")
            #expect(overview.status == 200)
            #expect(overview.text.contains("Politie-activiteit"))
            #expect(overview.text.contains("Legenda"))

            // English by choice, every label in it.
            let english = try await browser.get("/ui/?lang=en")
            #expect(english.text.contains("<html lang=\"en\">") && english.text.contains("Legend") && !english.text.contains("Legenda"))
            _ = try await browser.get("/ui/?lang=nl")

            // The editor edits politie's record: the commit's author is the person, history shows it.
            let page = try await browser.get("/ui/activities/p.a1")
            #expect(page.text.contains("form method=\"post\" action=\"/ui/activities/p.a1\""))
            let saved = try await browser.post("/ui/activities/p.a1", form: [
                "_csrf": page.csrf, "status": "delayed", "explanation": "Vertraagd door ziekte",
                "base.status": page.hidden("base.status"), "base.explanation": page.hidden("base.explanation"),
            ])
            #expect(saved.status == 303)
            #expect(try daemon.replica.fields(ofRecord: "p.a1")["status"]?.value == "delayed")
            let history = try daemon.replica.history(ofRecord: "p.a1")
            let author = try #require(history.last.map { try daemon.replica.author(of: $0.commit.commit.ref) ?? $0.commit.commit.author })
            #expect(author == "web:anna")
            let fresh = try await browser.get("/ui/activities/p.a1")
            #expect(fresh.text.contains("web:anna"))

            // A form rendered before a partner's change is refused with a clear message.
            try node.partnerCommits([FieldWrite(record: "p.a1", field: "status", value: "on-track")])
            let stale = try await browser.post("/ui/activities/p.a1", form: [
                "_csrf": page.csrf, "status": "completed", "explanation": "Vertraagd door ziekte",
                "base.status": fresh.hidden("base.status"), "base.explanation": fresh.hidden("base.explanation"),
            ])
            #expect(stale.status == 409)
            #expect(stale.text.contains("intussen gewijzigd"))
            #expect(try daemon.replica.fields(ofRecord: "p.a1")["status"]?.value == "on-track")
            // Saving again from the refused form (now based on the partner's version) replaces it knowingly.
            let again = try await browser.post("/ui/activities/p.a1", form: [
                "_csrf": page.csrf, "status": "completed", "explanation": "Vertraagd door ziekte",
                "base.status": stale.hidden("base.status"), "base.explanation": stale.hidden("base.explanation"),
            ])
            #expect(again.status == 303)
            #expect(try daemon.replica.fields(ofRecord: "p.a1")["status"]?.value == "completed")

            // Not politie's record: read only, says whose it is, and a forged POST is refused.
            let other = try await browser.get("/ui/activities/al1.r01.a01")
            #expect(other.text.contains("eigendom van jenv"))
            #expect(!other.text.contains("action=\"/ui/activities/al1.r01.a01\""))
            let refused = try await browser.post("/ui/activities/al1.r01.a01", form: ["_csrf": page.csrf, "status": "completed", "base.status": "none"])
            #expect(refused.status == 403)
            #expect(refused.text.contains("eigendom van jenv"))
            #expect(try daemon.replica.fields(ofRecord: "al1.r01.a01")["status"]?.value != "completed")

            // A POST without the CSRF token, or with another one, is refused and changes nothing.
            let before = try daemon.replica.lastLSN
            #expect(try await browser.post("/ui/activities/p.a1", form: ["status": "completed"]).status == 403)
            #expect(try await browser.post("/ui/activities/p.a1", form: ["_csrf": String(repeating: "0", count: 64), "status": "completed"]).status == 403)
            #expect(try daemon.replica.lastLSN == before)

            // Reports: the same report as `progsync report`, and a CSV.
            #expect(try await browser.get("/ui/reports/programme.html").text.contains("Programmaresultaten"))
            let csv = try await browser.get("/ui/reports/programme.csv")
            #expect(csv.status == 200 && csv.text.contains("Politie-activiteit"))

            // After logout the old cookie is refused.
            let oldCookie = browser.cookie
            #expect(try await browser.post("/ui/logout", form: ["_csrf": page.csrf]).status == 303)
            browser.cookie = oldCookie
            #expect(try await browser.get("/ui/").status == 303)

            // A viewer reads but cannot edit.
            let viewer = try WebBrowser(socketPath: configuration.socketPath)
            defer { viewer.shutdown() }
            #expect(try await viewer.login("vera", "vera's long password").status == 303)
            let viewerPage = try await viewer.get("/ui/activities/p.a1")
            #expect(viewerPage.text.contains("u bent lezer"))
            #expect(!viewerPage.text.contains("action=\"/ui/activities/p.a1\""))
            let viewerPost = try await viewer.post("/ui/activities/p.a1", form: ["_csrf": viewerPage.csrf, "status": "completed", "base.status": "none"])
            #expect(viewerPost.status == 403)
            #expect(try await viewer.get("/ui/conflicts").status == 403)

            // Disabling signs the person out at once.
            #expect(try await admin.send("POST", "/v1/users/vera", ["disabled": true]).0 == 200)
            #expect(try await viewer.get("/ui/").status == 303)
            #expect(try await viewer.login("vera", "vera's long password").status == 401)

            // A wrong type is an error and changes nothing; a long passphrase counts in full
            // (bcrypt alone would read only its first 72 bytes).
            #expect(try await admin.send("POST", "/v1/users/vera", .object(["disabled": .bool(false), "totp": .object([:])])).0 == 400)
            let users = try await admin.send("GET", "/v1/users").1["users"]?.arrayValue ?? []
            #expect(users.first { $0["name"]?.stringValue == "vera" }?["disabled"]?.boolValue == true, "\(users)")
            let passphrase = String(repeating: "één lange zin ", count: 8)
            #expect(try await admin.send("POST", "/v1/users/vera", .object(["disabled": .bool(false), "password": .string(passphrase)])).0 == 200)
            let signIn = try WebBrowser(socketPath: configuration.socketPath)
            defer { signIn.shutdown() }
            #expect(try await signIn.login("vera", String(passphrase.dropLast()) + "!").status == 401)
            #expect(try await signIn.login("vera", passphrase).status == 303)
            _ = daemon
        }
    }

    @Test func failedLoginsAreThrottled() async throws {
        try await Self.withNode { node, admin, browser in
            let configuration = node.configuration
            #expect(try await admin.send("POST", "/v1/users", ["name": "anna", "role": "viewer", "password": "anna's long password"]).0 == 201)
            for _ in 0..<configuration.ui.maxFailedLogins {
                #expect(try await browser.login("anna", "not the password").status == 401)
            }
            // Past the limit even the right password is refused for a while.
            let blocked = try await browser.login("anna", "anna's long password")
            #expect(blocked.status == 429)
            #expect(blocked.text.contains("Te veel mislukte pogingen"))
        }
    }

    @Test func secondFactor() async throws {
        try await Self.withNode { node, admin, browser in
            let added = try await admin.send("POST", "/v1/users", ["name": "anna", "role": "editor", "password": "anna's long password", "totp": true])
            #expect(added.0 == 201)
            #expect(added.1["totpURL"]?.stringValue?.hasPrefix("otpauth://totp/") == true)
            let secret = try #require(try node.daemon.replica.webUser(named: "anna")?.totpSecret)
            // The password alone, or a wrong code, is not enough.
            #expect(try await browser.login("anna", "anna's long password").status == 401)
            let form = try await browser.get("/ui/login")
            let code = TOTP(secret: secret).compute()
            let wrong = try await browser.post("/ui/login", form: [
                "_csrf": form.csrf, "name": "anna", "password": "anna's long password", "totp": String((code + 1) % 1_000_000),
            ])
            #expect(wrong.status == 401)
            let form2 = try await browser.get("/ui/login")
            let right = try await browser.post("/ui/login", form: [
                "_csrf": form2.csrf, "name": "anna", "password": "anna's long password", "totp": String(TOTP(secret: secret).compute()),
            ])
            #expect(right.status == 303)
            #expect(try await browser.get("/ui/").status == 200)
        }
    }

    @Test func trustedProxyHeader() async throws {
        try await Self.withNode({ c in
            c.ui.trustedUserHeader = "X-Remote-User"
            c.ui.trustedProxies = ["socket"]
        }) { node, admin, browser in
            #expect(try await admin.send("POST", "/v1/users", ["name": "anna", "role": "editor", "password": "anna's long password"]).0 == 201)
            let proxy = ["X-Remote-User": "anna"]
            let page = try await browser.send("GET", "/ui/activities/p.a1", headers: proxy)
            #expect(page.status == 200 && page.text.contains("anna"))
            // Names the app does not know, and forms without the token, are refused all the same.
            #expect(try await browser.send("GET", "/ui/", headers: ["X-Remote-User": "mallory"]).status == 303)
            #expect(try await browser.post("/ui/activities/p.a1", form: ["status": "completed"], headers: proxy).status == 403)
            let saved = try await browser.post("/ui/activities/p.a1", form: [
                "_csrf": page.csrf, "status": "completed", "base.status": page.hidden("base.status"),
            ], headers: proxy)
            #expect(saved.status == 303)
            #expect(try node.daemon.replica.fields(ofRecord: "p.a1")["status"]?.value == "completed")
        }
    }

    @Test func idleSessionsExpire() {
        let clock = ManualClock()
        let store = SessionStore(idleSeconds: 60, now: { clock.now })
        let session = store.create(user: "anna")
        clock.advance(59_000)
        #expect(store.session(session.id)?.user == "anna")
        // Use keeps it alive; 60 s without use ends it for good.
        clock.advance(59_000)
        #expect(store.session(session.id) != nil)
        clock.advance(60_000)
        #expect(store.session(session.id) == nil)
        clock.advance(-60_000)
        #expect(store.session(session.id) == nil)
    }

    @Test func configurationRefusesUnsafeListeners() throws {
        var configuration = DaemonConfiguration(dataDirectory: "/tmp/unused")
        configuration.ui.listen = "0.0.0.0:8443"
        #expect(editorsNeedTOTP(configuration.ui))
        configuration.ui.listen = "127.0.0.1:8443"
        #expect(!editorsNeedTOTP(configuration.ui))
        configuration.ui.listen = "0.0.0.0:8443"
        configuration.ui.plainHTTP = true
        let tls = try NodeTLSIdentity.create(commonName: "t")
        let logger = Logger(label: "t")
        let web = try WebApp(backend: NoBackend(), configuration: configuration.ui, editorsNeedTOTP: true, logger: logger)
        #expect(throws: ConfigurationError.self) { try makeWebListener(web, configuration, tls: tls, logger: logger) }
    }
}

final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64 = 1_000_000
    var now: UInt64 { lock.withLock { value } }
    func advance(_ ms: Int64) { lock.withLock { value = UInt64(Int64(value) + ms) } }
}

/// Only for building a WebApp whose pages are never requested.
struct NoBackend: WebBackend {
    var replica: Replica { fatalError("not used") }
    var org: String { "jenv" }
    func commit(author: String, writes: [FieldWrite], resolving: Bool) async throws -> SignedCommit { fatalError("not used") }
    func subscribe() -> AsyncStream<String>? { nil }
    func partners() throws -> [JSONValue] { [] }
    func latestReconcileReport() -> JSONValue? { nil }
}

/// A browser's part of HTTP on the socket: one session cookie, forms, no redirects followed.
final class WebBrowser: @unchecked Sendable {
    let client: HTTPClient
    var cookie: String?

    struct Page {
        var status: Int
        var text: String
        var csrf: String { hidden("_csrf") }
        func hidden(_ name: String) -> String {
            guard let range = text.range(of: "name=\"\(name)\" value=\"") else { return "" }
            return String(text[range.upperBound...].prefix { $0 != "\"" })
        }
    }

    init(socketPath: String) throws {
        client = try HTTPClient(configuration: HTTPClientConfiguration(
            unixSocketPath: socketPath, connectTimeout: .seconds(2), requestTimeout: .seconds(30)))
    }

    func shutdown() { client.shutdown() }

    func send(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:]) async throws -> Page {
        var request = HTTPClientRequest(method: method, url: "http://localhost" + path, body: body)
        for (name, value) in headers { request.addHeader(name, value) }
        if let cookie { request.addHeader("Cookie", cookie) }
        if body != nil { request.addHeader("Content-Type", "application/x-www-form-urlencoded") }
        let response = try await client.send(request)
        for header in response.headers(named: "set-cookie") where header.hasPrefix(WebApp.sessionCookie + "=") {
            let pair = String(header.prefix { $0 != ";" })
            cookie = pair.hasSuffix("=") ? nil : pair
        }
        return Page(status: response.status, text: String(decoding: response.body, as: UTF8.self))
    }

    func get(_ path: String) async throws -> Page { try await send("GET", path) }

    func post(_ path: String, form: [String: String], headers: [String: String] = [:]) async throws -> Page {
        let body = form.map { "\(Self.encode($0.key))=\(Self.encode($0.value))" }.joined(separator: "&")
        return try await send("POST", path, body: Array(body.utf8), headers: headers)
    }

    func login(_ name: String, _ password: String) async throws -> Page {
        let form = try await get("/ui/login")
        return try await post("/ui/login", form: ["_csrf": form.csrf, "name": name, "password": password])
    }

    static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? text
    }
}
