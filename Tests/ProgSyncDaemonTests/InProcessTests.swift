import Foundation
import Logging
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncHTTPClient
import ProgSyncStore
import Testing

/// `buildDaemon(configuration:logger:)` in the test process (§3: so tests can start a real daemon
/// in-process on temporary paths). No LoggingSystem.bootstrap: the logger is made directly.
@Suite(.serialized)
struct InProcessTests {
    @Test func buildRunAnswerAndStop() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-inproc-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = DaemonConfiguration(dataDirectory: folder.appendingPathComponent("data").path)
        configuration.loadSampleData = false
        var logger = Logger(label: "progsyncd-test")
        logger.logLevel = .warning
        let daemon = try buildDaemon(configuration: configuration, logger: logger)
        #expect(daemon.node.org == "jenv")
        let run = Task { try await daemon.run() }
        defer { run.cancel() }

        let client = try InProcessClient(socketPath: configuration.socketPath)
        defer { client.shutdown() }
        let ready = await eventually(timeout: 20) { (try? await client.send("GET", "/v1/status").0) == 200 }
        #expect(ready, "the in-process daemon did not answer")
        let (status, json) = try await client.send("GET", "/v1/status")
        #expect(status == 200 && json["node"]?.stringValue == daemon.node.identity.id.rawValue)
        #expect(json["records"]?["total"]?.intValue == 0)

        let (created, _) = try await client.send("PUT", "/v1/records/inproc.al1", ["kind": "action-line", "number": 1, "title": "In het proces"])
        #expect(created == 201)
        #expect(try daemon.replica.fields(ofRecord: "inproc.al1")["title"]?.value == "In het proces")

        // A second daemon on the same folder, in the same process, is refused by the folder lock.
        #expect(throws: (any Error).self) { try buildDaemon(configuration: configuration, logger: logger) }

        // Cancelling the task stops the daemon.
        run.cancel()
        let stopped = await eventually(timeout: 15) { !FileManager.default.fileExists(atPath: configuration.socketPath) }
        _ = try? await run.value
        #expect(stopped, "the socket is still there after the daemon stopped")
    }
}

/// A client on an in-process daemon's socket: status and JSON body (null when not JSON).
struct InProcessClient {
    let client: HTTPClient

    init(socketPath: String) throws {
        client = try HTTPClient(configuration: HTTPClientConfiguration(
            unixSocketPath: socketPath, connectTimeout: .seconds(2), requestTimeout: .seconds(30)))
    }

    func send(_ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> (Int, JSONValue) {
        let response = try await client.send(HTTPClientRequest(method: method, url: "http://localhost" + path, body: body?.canonicalBytes))
        return (response.status, (try? JSONParser.parse(response.body)) ?? .null)
    }

    func shutdown() { client.shutdown() }
}
