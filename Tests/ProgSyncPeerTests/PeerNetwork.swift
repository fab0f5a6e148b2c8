import Crypto
import Foundation
import ProgSyncCore
import ProgSyncHTTPClient

#if canImport(Glibc)
import Glibc
#endif

/// Real `progsyncd` processes on loopback, each with its own folder, identity, TLS certificate
/// and registry, talking mutual TLS. Topology is set per node by which peers get an address in
/// that node's registry file.
final class PeerNetwork: @unchecked Sendable {
    struct Node {
        var name: String
        var org: String
        var folder: String
        var port: Int
        var id: String
        var publicKey: String
        var pin: String
        var privateKey: Curve25519.Signing.PrivateKey
        var socket: String { folder + "/progsync.sock" }
        /// Where partners reach it and where it listens (a network namespace's address, say).
        var host = "127.0.0.1"
        /// Run the daemon under these commands (`ip netns exec NS`, `faketime +1h`), and with this environment.
        var launchPrefix: [String] = []
        var environment: [String: String] = [:]
        var process: Process?
        var client: HTTPClient
    }

    let root: String
    var nodes: [String: Node] = [:]
    var order: [String] = []
    /// node name → names of the peers it connects to (nil: all others).
    var links: [String: Set<String>] = [:]
    /// Nodes in no registry but their own: they join through a coordinator's admission.
    var outsiders: Set<String> = []
    /// Nodes set up by `progsyncd init --invite`: their trust root came with the invite, and
    /// `start` leaves their registry file alone.
    var joined: Set<String> = []

    static func locate(_ name: String) -> String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return exe.deletingLastPathComponent().appendingPathComponent(name).path
    }

    static let progsyncd = locate("progsyncd")

    init(_ members: [(name: String, org: String)]) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-net-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for (name, org) in members {
            let folder = root + "/" + name
            let result = try Self.run(Self.progsyncd, ["init", "--data-dir", folder, "--org", org, "--name", name])
            guard result.status == 0 else { throw PeerTestError("init \(name): \(result.output)") }
            let identity = try JSONParser.parse([UInt8](FileManager.default.contents(atPath: folder + "/identity.json")!))
            let pin = result.output.split(separator: "\n").first { $0.hasPrefix("certificate:") }
                .map { String($0.dropFirst("certificate:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
            let key = try Curve25519.Signing.PrivateKey(rawRepresentation: Base64.decode(identity["privateKey"]!.stringValue!)!)
            nodes[name] = Node(
                name: name, org: org, folder: folder, port: try Self.freePort(), id: identity["id"]!.stringValue!,
                publicKey: identity["publicKey"]!.stringValue!, pin: pin, privateKey: key,
                client: try HTTPClient(configuration: .init(unixSocketPath: folder + "/progsync.sock", requestTimeout: .seconds(60))))
            order.append(name)
        }
    }

    /// The registry as `name` sees it: every node's key and pin; addresses only for its links.
    func registry(for name: String, coordinators: [String] = ["jenv"]) -> JSONValue {
        let linked = links[name] ?? Set(order).subtracting([name])
        var orgs: [String: [JSONValue]] = [:]
        for n in order.map({ nodes[$0]! }) where !outsiders.contains(n.name) || n.name == name {
            var entry: [String: JSONValue] = [
                "id": .string(n.id), "name": .string(n.name), "publicKey": .string(n.publicKey), "certificatePin": .string(n.pin),
            ]
            if linked.contains(n.name) { entry["address"] = .string("https://\(n.host):\(n.port)") }
            orgs[n.org, default: []].append(.object(entry))
        }
        return .object([
            "coordinators": .array(coordinators.map { .string($0) }),
            "orgs": .array(orgs.keys.sorted().map { .object(["code": .string($0), "nodes": .array(orgs[$0]!)]) }),
        ])
    }

    /// Runs `progsyncd init --invite` for a new node `name`; on success the node is part of the
    /// network (not started). `extra` adds options (`--request FILE` for the offline join).
    func join(_ name: String, invite: String, extra: [String] = []) throws -> (status: Int32, output: String) {
        let folder = root + "/" + name
        let port = try Self.freePort()
        let result = try Self.run(Self.progsyncd, ["init", "--data-dir", folder, "--invite", invite, "--name", name,
                                                   "--address", "https://127.0.0.1:\(port)"] + extra)
        guard result.status == 0 else { return result }
        let identity = try JSONParser.parse([UInt8](FileManager.default.contents(atPath: folder + "/identity.json")!))
        let pin = result.output.split(separator: "\n").first { $0.hasPrefix("certificate:") }
            .map { String($0.dropFirst("certificate:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: Base64.decode(identity["privateKey"]!.stringValue!)!)
        nodes[name] = Node(
            name: name, org: identity["org"]!.stringValue!, folder: folder, port: port, id: identity["id"]!.stringValue!,
            publicKey: identity["publicKey"]!.stringValue!, pin: pin, privateKey: key,
            client: try HTTPClient(configuration: .init(unixSocketPath: folder + "/progsync.sock", requestTimeout: .seconds(60))))
        order.append(name)
        joined.insert(name)
        outsiders.insert(name)
        return result
    }

    func start(_ name: String, sample: Bool = false) throws {
        var node = nodes[name]!
        if !joined.contains(name) {
            try (registry(for: name).prettyString() + "\n").write(toFile: node.folder + "/registry.json", atomically: true, encoding: .utf8)
        }
        let process = Process()
        let command = node.launchPrefix + [Self.progsyncd, "--data-dir", node.folder] + (sample ? [] : ["--empty"])
        process.executableURL = URL(fileURLWithPath: command[0].hasPrefix("/") ? command[0] : "/usr/bin/env")
        process.arguments = command[0].hasPrefix("/") ? Array(command.dropFirst()) : command
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PROGSYNC_") }
        env["PROGSYNC_PEERS_LISTEN"] = "\(node.host):\(node.port)"
        env.merge(node.environment) { _, new in new }
        process.environment = env
        let log = FileHandle(forWritingAtPath: node.folder + "/daemon.log") ?? {
            FileManager.default.createFile(atPath: node.folder + "/daemon.log", contents: nil)
            return FileHandle(forWritingAtPath: node.folder + "/daemon.log")!
        }()
        log.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        node.process = process
        nodes[name] = node
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: node.socket), (try? status(name)) != nil { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw PeerTestError("\(name) did not start: \(self.log(name).suffix(2000))")
    }

    func log(_ name: String) -> String {
        (try? String(contentsOfFile: nodes[name]!.folder + "/daemon.log", encoding: .utf8)) ?? ""
    }

    /// Stops a node. A launch prefix that forks instead of exec-ing (faketime) does not pass
    /// signals on, so its children get the signal first; the wrapper exits with them.
    func stop(_ name: String, signal: Int32 = SIGTERM) {
        guard let process = nodes[name]?.process, process.isRunning else { return }
        let pid = process.processIdentifier
        let children = ((try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? "")
            .split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        for child in children { kill(child, signal) }
        let deadline = Date().addingTimeInterval(10)
        while !children.isEmpty, process.isRunning, Date() < deadline { usleep(50_000) }
        for child in children where process.isRunning { kill(child, SIGKILL) }
        if process.isRunning { kill(pid, signal) }
        process.waitUntilExit()
        nodes[name]!.process = nil
    }

    func tearDown() {
        for name in order { stop(name, signal: SIGKILL) }
        for name in order { nodes[name]!.client.shutdown() }
        try? FileManager.default.removeItem(atPath: root)
    }

    // MARK: Talking to nodes

    /// `GET /v1/conflicts` as every node must list it: without authors, since a node shows the
    /// name behind its own pseudonyms (author.share) where partners show the pseudonym.
    func conflictsToCompare(_ name: String) async throws -> String {
        let conflicts = try await request(name, "GET", "/v1/conflicts").1["conflicts"]?.arrayValue ?? []
        let stripped = conflicts.map { conflict -> JSONValue in
            guard case .object(var o) = conflict else { return conflict }
            o["versions"] = .array((o["versions"]?.arrayValue ?? []).map { version in
                guard case .object(var v) = version else { return version }
                v["author"] = nil
                return .object(v)
            })
            return .object(o)
        }
        return JSONValue.array(stripped).canonicalString
    }

    func request(_ name: String, _ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> (Int, JSONValue) {
        let response = try await nodes[name]!.client.send(HTTPClientRequest(
            method: method, url: "http://localhost" + path, body: body?.canonicalBytes))
        return (response.status, (try? JSONParser.parse(response.body, maxDepth: 64)) ?? .null)
    }

    func status(_ name: String) throws -> JSONValue {
        let semaphore = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: JSONValue?
        let client = nodes[name]!.client
        Task {
            if let r = try? await client.send(HTTPClientRequest(url: "http://localhost/v1/status", timeout: .seconds(2))), r.status == 200 {
                result = try? JSONParser.parse(r.body)
            }
            semaphore.signal()
        }
        semaphore.wait()
        guard let result else { throw PeerTestError("no status from \(name)") }
        return result
    }

    func digest(_ name: String) async throws -> String {
        try await request(name, "GET", "/v1/digest").1["root"]?.stringValue ?? ""
    }

    /// Waits until every running node reports the same digest and version vector.
    func waitForAgreement(_ names: [String]? = nil, timeout: TimeInterval = 20) async throws -> String {
        let names = names ?? order
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String] = []
        while Date() < deadline {
            var digests: [String] = []
            var vectors: [JSONValue] = []
            for n in names {
                let (_, s) = try await request(n, "GET", "/v1/status")
                digests.append(s["digest"]?.stringValue ?? "")
                vectors.append(s["versionVector"] ?? .null)
            }
            last = digests
            if Set(digests).count == 1, Set(vectors.map(\.canonicalString)).count == 1 { return digests[0] }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw PeerTestError("no agreement within \(timeout) s: \(zip(names, last).map { "\($0)=\($1.prefix(12))" })")
    }

    // MARK: Helpers

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw PeerTestError("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// A write a node acknowledged: what it said it committed.
struct AckedWrite: Hashable {
    var node: String
    var record: String
    var field: String
    var value: JSONValue
    var origin: String
    var seq: Int64
    var stamp: UInt64

    /// The merge order of §7: greatest (stamp, origin) wins.
    func beats(_ other: AckedWrite) -> Bool {
        stamp != other.stamp ? stamp > other.stamp : other.origin.utf8.lexicographicallyPrecedes(origin.utf8)
    }

    /// The write a PATCH answer acknowledges, or nil when the answer is not a 200 with a commit.
    init?(node: String, record: String, field: String, value: JSONValue, status: Int, answer: JSONValue) {
        guard status == 200, let origin = answer["commit"]?["origin"]?.stringValue, let seq = answer["commit"]?["seq"]?.intValue,
            let stamp = answer["commit"]?["stamp"]?.stringValue.flatMap({ UInt64($0, radix: 16) })
        else { return nil }
        self.init(node: node, record: record, field: field, value: value, origin: origin, seq: seq, stamp: stamp)
    }

    init(node: String, record: String, field: String, value: JSONValue, origin: String, seq: Int64, stamp: UInt64) {
        (self.node, self.record, self.field, self.value, self.origin, self.seq, self.stamp) = (node, record, field, value, origin, seq, stamp)
    }
}

extension PeerNetwork {
    /// PATCHes one field on a node and returns the acknowledged write, or throws with the answer.
    func write(_ node: String, _ record: String, _ field: String, _ value: JSONValue) async throws -> AckedWrite {
        let (status, body) = try await request(node, "PATCH", "/v1/records/\(record)", .object([field: value]))
        guard let ack = AckedWrite(node: node, record: record, field: field, value: value, status: status, answer: body) else {
            throw PeerTestError("\(node) PATCH \(record): \(status) \(body)")
        }
        return ack
    }
}

/// Polls `body` every 100 ms until it returns true or `timeout` passes.
func eventually(_ timeout: TimeInterval, _ body: () async throws -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await body() { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await body()
}

extension HTTPClientRequest {
    /// As a partner node sends it, naming its peer protocol range: the listener takes a caller
    /// that names none for a protocol-1 node and refuses it (426).
    func asPartner() -> HTTPClientRequest {
        var request = self
        request.addHeader("Progsync-Protocol", "2")
        request.addHeader("Progsync-Protocol-Min", "2")
        return request
    }
}

struct PeerTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
