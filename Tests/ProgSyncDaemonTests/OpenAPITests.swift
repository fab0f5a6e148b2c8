import Foundation
import Hummingbird
import Logging
import ProgSyncCore
@testable import ProgSyncDaemon
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
        let reports = ReconcileReports(directory: FileManager.default.temporaryDirectory.path, keepDays: 1)
        let api = LocalAPI(
            replica: replica, node: NodeFiles.StoredIdentity(identity: identity, org: "jenv", name: nil), limits: .init(), events: events,
            committer: GroupCommitter(replica: replica), peers: [],
            reconciler: Reconciler(replica: replica, peers: [], reports: reports, logger: Logger(label: "openapi-test")),
            reports: reports, inbound: InboundContact(), authors: CommitAuthors(sharing: .pseudonym, replica: replica))
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

    @Test func everyDocumentedRouteIsServed() async throws {
        let d = try sharedDaemon()
        // The detector works: a method the router does not know is "no such route".
        #expect(Self.isNoSuchRoute(try await d.request("POST", "/v1/digest")))
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
