import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncHTTPClient
import Synchronization

/// A partner that misbehaves on purpose. It is a registry node of a `PeerNetwork` whose daemon is
/// never started: its TLS certificate and signing key are real, so it passes mutual TLS and signs
/// its commits validly, but it says whatever the test scripts. As a server it answers the real
/// daemons' pulls, hellos, range and digest requests on its registry port; as a client it sends
/// crafted requests to their peer ports with the project's libcurl client.
final class HostilePartner: Sendable {
    /// One scripted answer: status, raw body bytes (so malformed JSON can be sent too), a delay.
    struct Answer: Sendable {
        var status: HTTPResponse.Status = .ok
        var body: [UInt8]
        var delay: Duration = .zero

        static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, delay: Duration = .zero) -> Answer {
            Answer(status: status, body: value.canonicalBytes, delay: delay)
        }

        static func text(_ text: String) -> Answer { Answer(body: Array(text.utf8)) }
    }

    /// Builds an answer from the request's query parameters.
    typealias Script = @Sendable (_ query: [String: String]) -> Answer

    static let routes = [
        "GET /v1/peer/hello", "GET /v1/peer/commits", "POST /v1/peer/commits", "GET /v1/peer/commits/range",
        "GET /v1/peer/digest", "GET /v1/peer/digest/buckets", "POST /v1/peer/digest/entries",
    ]

    let name: String
    let id: String
    let org: String
    let port: Int
    let folder: String
    let signer: NodeIdentity
    /// Per route, the answers still to give: each request takes the first; the last one repeats.
    private let scripts = Mutex<[String: [Script]]>([:])
    /// Every request served, as "METHOD /path?query", in order.
    let served = Mutex<[String]>([])
    private let task = Mutex<Task<Void, any Error>?>(nil)

    init(_ node: PeerNetwork.Node) {
        (name, id, org, port, folder) = (node.name, node.id, node.org, node.port, node.folder)
        signer = NodeIdentity(privateKey: node.privateKey)
    }

    deinit { task.withLock { $0?.cancel() } }

    /// Replaces the answers of a route ("GET /v1/peer/hello").
    func answer(_ route: String, _ answers: Script...) {
        precondition(Self.routes.contains(route), "not a peer route: \(route)")
        scripts.withLock { $0[route] = answers }
    }

    func answer(_ route: String, always value: JSONValue) {
        answer(route) { _ in .json(value) }
    }

    func requests(_ route: String) -> [String] {
        served.withLock { $0.filter { $0.hasPrefix(route + "?") || $0 == route } }
    }

    /// Listens on its registry port with its registry certificate, admitting the given nodes.
    func serve(admitting partners: [PeerNetwork.Node]) async throws {
        let router = Router()
        for route in Self.routes {
            let parts = route.split(separator: " ")
            let method: HTTPRequest.Method = parts[0] == "GET" ? .get : .post
            router.on(RouterPath(String(parts[1])), method: method) { request, _ -> Response in
                _ = try await request.body.collect(upTo: 64 << 20)
                let query = Dictionary(request.uri.queryParameters.map { (String($0.key), String($0.value)) }, uniquingKeysWith: { a, _ in a })
                self.served.withLock { $0.append(route + (request.uri.query.map { "?" + $0 } ?? "")) }
                let script = self.scripts.withLock { s -> Script? in
                    guard let queue = s[route], let first = queue.first else { return nil }
                    if queue.count > 1 { s[route] = Array(queue.dropFirst()) }
                    return first
                }
                let answer = script?(query) ?? .json(["error": "not-found", "message": "not scripted"], status: .notFound)
                if answer.delay > .zero { try await Task.sleep(for: answer.delay) }
                return Response(status: answer.status, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
            }
        }
        let tls = try NodeTLSIdentity.load(certificatePath: folder + "/tls-cert.pem", keyPath: folder + "/tls-key.pem")
        let pins = Set(partners.map(\.pin))
        var logger = Logger(label: "hostile-\(name)")
        logger.logLevel = .error
        let (ports, running) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: router,
            server: try .tls(.http1(), configuration: try peerServerTLSConfiguration(identity: tls, allowedPins: { pins }, logger: logger)),
            configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in
                running.yield(channel.localAddress?.port ?? 0)
                running.finish()
            },
            logger: logger)
        task.withLock { $0 = Task { try await app.runService(gracefulShutdownSignals: []) } }
        var listening = ports.makeAsyncIterator()
        guard await listening.next() == port else { throw PeerTestError("\(name) could not listen on \(port)") }
    }

    // MARK: As a client

    /// A libcurl client with this partner's certificate, pinning `target`'s.
    func client(to target: PeerNetwork.Node) throws -> HTTPClient {
        try HTTPClient(configuration: .init(
            connectTimeout: .seconds(5), requestTimeout: .seconds(20),
            tls: peerClientTLS(certificatePath: folder + "/tls-cert.pem", keyPath: folder + "/tls-key.pem", peerPin: target.pin)))
    }

    /// Sends one request to `target`'s peer API; the status and the JSON answer (null if none).
    func send(_ client: HTTPClient, to target: PeerNetwork.Node, _ method: String, _ path: String, body: [UInt8]? = nil)
        async throws -> (status: Int, json: JSONValue)
    {
        let response = try await client.send(HTTPClientRequest(
            method: method, url: "https://127.0.0.1:\(target.port)" + path, body: body, timeout: .seconds(20)).asPartner())
        return (response.status, (try? JSONParser.parse(response.body)) ?? .null)
    }

    // MARK: Crafted commits

    /// A commit of this partner's, validly signed, with any seq (0 and 2^63 included).
    func commit(seq: UInt64, prev: [UInt8] = [], _ changes: [Change]) throws -> SignedCommit {
        try SignedCommit.sign(Commit(
            origin: signer.id, seq: seq, stamp: Stamp(milliseconds: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0),
            author: "mallory", prev: prev, changes: changes), with: signer)
    }
}
