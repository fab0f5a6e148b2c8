import Foundation
import Hummingbird
import Logging
import ProgSyncCore
@testable import ProgSyncDaemon
import ProgSyncHTTPClient
import ProgSyncStore
import Testing

/// Docs/local-api.openapi.yaml against the running daemon: every documented route answers (it is
/// not the router's "no such route"), and every route the daemon registers is documented.
@Suite(.serialized, .sharedDaemon())
struct OpenAPITests {
    struct Route: Hashable, CustomStringConvertible {
        var method: String
        var path: String
        var description: String { "\(method) \(path)" }
    }

    static let documentURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Docs/local-api.openapi.yaml")

    /// The routes `LocalAPI.addRoutes` registers, read from a real router it filled (Hummingbird
    /// writes a `:name` parameter `{name}`, as the document does).
    static func registered() throws -> Set<Route> {
        let identity = NodeIdentity()
        let registry = PartnerRegistry(nodes: [PartnerRegistry.Node(org: "jenv", publicKey: identity.publicKey)], coordinators: ["jenv"])
        let replica = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: identity, org: "jenv", registry: registry))
        defer { try? replica.close() }
        let events = EventBroadcaster(startingAfter: 0)
        let auditPath = FileManager.default.temporaryDirectory.appendingPathComponent("openapi-audit-\(UUID().uuidString).jsonl").path
        let audit = try AuditLog(path: auditPath, logger: Logger(label: "openapi-test"))
        defer { audit.close(); for suffix in ["", ".head"] { try? FileManager.default.removeItem(atPath: auditPath + suffix) } }
        let reports = ReconcileReports(directory: FileManager.default.temporaryDirectory.path, keepDays: 1)
        let api = LocalAPI(
            replica: replica, node: NodeFiles.StoredIdentity(identity: identity, org: "jenv", name: nil), limits: .init(), events: events,
            committer: GroupCommitter(replica: replica), peerSet: PeerSet(),
            reconciler: Reconciler(replica: replica, peers: { [] }, reports: reports, audit: audit, logger: Logger(label: "openapi-test")),
            reports: reports, inbound: InboundContact(), authors: CommitAuthors(sharing: .pseudonym, replica: replica), audit: audit)
        let router = Router(context: LocalRequestContext.self)
        api.addRoutes(to: router)
        return Set(router.routes.map { Route(method: $0.method.rawValue, path: $0.path.description) })
    }

    /// The path+method pairs of the document's `paths:` section: `  /path:` lines, then
    /// `    get:`-style lines under them.
    static func documentedRoutes() throws -> [Route] {
        let text = try String(contentsOf: documentURL, encoding: .utf8)
        var routes: [Route] = []
        var inPaths = false
        var current: String?
        let methods: Set<String> = ["get", "put", "post", "patch", "delete", "head", "options", "trace"]
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if line.hasPrefix("paths:") { inPaths = true; continue }
            guard inPaths else { continue }
            if let first = line.first, first != " ", first != "#" { break }  // the next top-level key
            if line.hasPrefix("  /"), !line.hasPrefix("   "), line.hasSuffix(":") {
                current = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":"), let path = current {
                let name = line.trimmingCharacters(in: .whitespaces).dropLast()
                if methods.contains(String(name)) { routes.append(Route(method: name.uppercased(), path: path)) }
            }
        }
        return routes
    }

    /// A concrete path for a documented template.
    static func concrete(_ path: String) -> String {
        path.replacingOccurrences(of: "/v1/conflicts/{id}", with: "/v1/conflicts/al1.r01.a01~status")
            .replacingOccurrences(of: "{id}", with: "al1.r01.a01")
            .replacingOccurrences(of: "{hash}", with: String(repeating: "0", count: 64))
    }

    /// A body that exercises the route without changing much.
    static func harmlessBody(_ route: Route) -> JSONValue? {
        switch (route.method, route.path) {
        case ("PUT", _), ("PATCH", _): ["explanation": "gecontroleerd door de OpenAPI-test"]
        case ("POST", "/v1/import"): ["records": []]
        case ("POST", "/v1/conflicts/{id}/resolve"): ["pick": 0]
        default: nil
        }
    }

    static func isNoSuchRoute(_ reply: Reply) -> Bool {
        reply.status == 404 && (reply.json["message"]?.stringValue?.hasPrefix("no such route") ?? false)
    }

    @Test func documentParses() throws {
        let routes = try Self.documentedRoutes()
        #expect(routes.count >= 16, "\(routes)")
        #expect(Set(routes).count == routes.count, "a route documented twice")
        let text = try String(contentsOf: Self.documentURL, encoding: .utf8)
        #expect(text.hasPrefix("openapi: 3.1"))
        for schema in ["Record:", "CommitRef:", "Conflict:", "HeldCommit:", "Status:", "Digest:", "Error:"] {
            #expect(text.contains("    \(schema)\n"), "schema \(schema) missing")
        }
    }

    /// Every error code the daemon's sources can answer with is in the document's `Error.error`
    /// enum (schemathesis checks the answers it happens to provoke; this checks the rest).
    @Test func everyErrorCodeIsDocumented() throws {
        let text = try String(contentsOf: Self.documentURL, encoding: .utf8)
        let errorSchema = try #require(text.range(of: "\n    Error:\n"))
        let enumLine = try #require(text[errorSchema.upperBound...].split(separator: "\n").first { $0.contains("enum: [") })
        let documented = Set(enumLine.split(separator: "[")[1].split(separator: "]")[0].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) })
        let sources = Self.documentURL.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources/ProgSyncDaemon")
        var used = Set<String>()
        for file in try FileManager.default.contentsOfDirectory(atPath: sources.path) where file.hasSuffix(".swift") {
            let source = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for pattern in [#"APIError\(\.[a-zA-Z]+, "([a-z-]+)""#, #"code = "([a-z-]+)""#, #""error": "([a-z-]+)""#] {
                for match in source.matches(of: try Regex(pattern)) {
                    if let code = match.output[1].substring { used.insert(String(code)) }
                }
            }
        }
        #expect(used.isSuperset(of: ["bad-request", "not-found", "invalid", "bad-bundle", "method-not-allowed"]), "the scan works: \(used)")
        for code in used.sorted() {
            #expect(documented.contains(code), "error code \(code) is answered but not documented in Error.error")
        }
    }

    @Test func everyRegisteredRouteIsDocumented() throws {
        let documented = Set(try Self.documentedRoutes())
        let registered = try Self.registered()
        // The enumeration works: it sees routes with and without parameters.
        #expect(registered.contains(Route(method: "GET", path: "/v1/status")), "\(registered)")
        #expect(registered.contains(Route(method: "POST", path: "/v1/quarantine/{hash}/release")), "\(registered)")
        for route in registered.sorted(by: { $0.description < $1.description }) {
            #expect(documented.contains(route), "\(route) is served but not documented")
        }
    }

    /// A known path with a method it does not serve is 405 with `Allow` and the JSON error
    /// shape (HTTP's rule, and what schemathesis's `unsupported_method` check asks); unknown
    /// paths stay 404.
    @Test func undeclaredMethodsAre405WithAllow() async throws {
        let d = try sharedDaemon()
        for (method, path, allow) in [
            ("TRACE", "/v1/status", "GET"), ("POST", "/v1/digest", "GET"),
            ("POST", "/v1/records/al1.r01.a01/history", "GET"),
            ("POST", "/v1/records/al1.r01.a01", "DELETE, GET, PATCH, PUT"), ("DELETE", "/v1/bundle", "GET, POST"),
        ] {
            let reply = try await d.request(method, path)
            #expect(reply.status == 405, "\(method) \(path): \(reply)")
            #expect(reply.headers.first { $0.name.lowercased() == "allow" }?.value == allow, "\(method) \(path): \(reply.headers)")
            #expect(reply.isErrorShape && reply.json["error"] == "method-not-allowed", "\(method) \(path): \(reply)")
        }
        let unknown = try await d.request("TRACE", "/v1/nothing")
        #expect(unknown.status == 404 && unknown.isErrorShape, "\(unknown)")
    }

    /// What schemathesis found where the server was looser or stricter than the document.
    @Test func queryAndPathValuesAreReadAsDocumented() async throws {
        let d = try sharedDaemon()
        // A filter that can only match a well-formed value is checked like one.
        for query in ["result=", "actionLine=", "owner=", "owner=Politie", "result=a%20b"] {
            let reply = try await d.request("GET", "/v1/records?" + query)
            #expect(reply.status == 400 && reply.isErrorShape, "?\(query): \(reply)")
        }
        // Form encoding: `+` is a space, `%2B` a plus.
        let delayed = try await d.count("status=delayed")
        #expect(delayed > 0)
        #expect(try await d.count("status=In+uitvoering+maar+met+vertraging") == delayed)
        #expect(try await d.request("GET", "/v1/records?q=%2B%2B%2B").status == 200)
        // A conflict id splits at its first "~" even when a combining mark follows it.
        let resolve = try await d.request("POST", "/v1/conflicts/al1~%CC%81status/resolve", body: ["pick": 0])
        #expect(resolve.status == 404 && resolve.isErrorShape, "\(resolve)")
    }

    @Test func everyDocumentedRouteIsServed() async throws {
        let d = try sharedDaemon()
        // The detector works: a path the router does not know is "no such route".
        #expect(Self.isNoSuchRoute(try await d.request("GET", "/v1/nothing")))

        for route in try Self.documentedRoutes() {
            let path = Self.concrete(route.path)
            if route.path == "/v1/events" {
                // A stream: read its head with curl for a second.
                let result = try await runProcess(Binaries.curl, [
                    "-sS", "-N", "-i", "--max-time", "1", "--unix-socket", d.socketPath, "http://localhost" + path,
                ])
                #expect(result.stdout.hasPrefix("HTTP/1.1 200"), "\(route): \(result)")
                #expect(result.stdout.lowercased().contains("content-type: text/event-stream"), "\(route): \(result)")
                #expect(result.stdout.contains(": progsync events"), "\(route): \(result)")
                continue
            }
            let reply = try await d.request(route.method, path, body: Self.harmlessBody(route))
            #expect(!Self.isNoSuchRoute(reply), "\(route) is documented but not served: \(reply)")
            #expect(reply.status < 500, "\(route): \(reply)")
            #expect(reply.json.objectValue != nil, "\(route): the answer is not a JSON object: \(reply)")
        }
    }
}
