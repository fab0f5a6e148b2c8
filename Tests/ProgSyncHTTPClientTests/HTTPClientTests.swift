import Foundation
import ProgSyncHTTPClient
import Testing

/// The Python fixture server, one per test so that connection counts are
/// not shared between tests running in parallel.
private final class TestServer {
    let socketPath: String
    private let process: Process

    init() throws {
        guard
            let script = Bundle.module.url(forResource: "test_server", withExtension: "py", subdirectory: "Fixtures")
        else {
            throw FixtureError("Fixtures/test_server.py is missing from the test bundle")
        }
        // Unix socket paths are limited to ~100 bytes: keep it short.
        socketPath = "/tmp/psh-\(UUID().uuidString.prefix(12)).sock"
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", script.path, socketPath]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()

        var seen = Data()
        while !(String(decoding: seen, as: UTF8.self).contains("ready")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty {
                process.waitUntilExit()
                throw FixtureError("test server exited before it was ready (status \(process.terminationStatus))")
            }
            seen.append(chunk)
        }
    }

    var baseURL: String { "http://localhost" }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: socketPath)
    }

    deinit {
        stop()
    }
}

private struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

private struct Echo: Decodable {
    let method: String
    let path: String
    let headers: [String: String]
    let body: String
}

private func withServer(
    configuration: (String) -> HTTPClientConfiguration = { HTTPClientConfiguration(unixSocketPath: $0) },
    _ body: (_ baseURL: String, HTTPClient) async throws -> Void
) async throws {
    let server = try TestServer()
    defer { server.stop() }
    let client = try HTTPClient(configuration: configuration(server.socketPath))
    defer { client.shutdown() }
    try await body(server.baseURL, client)
}

private func text(_ response: HTTPClientResponse) -> String {
    String(decoding: response.body, as: UTF8.self)
}

@Suite("HTTPClient over a Unix socket")
struct HTTPClientTests {
    @Test func getAndPostRoundTrip() async throws {
        try await withServer { base, client in
            let get = try await client.send(HTTPClientRequest(
                url: "\(base)/echo?x=1",
                headers: [HTTPHeader("X-Test", "hello"), HTTPHeader("X-Empty", "")]))
            #expect(get.status == 200)
            let echo = try JSONDecoder().decode(Echo.self, from: Data(get.body))
            #expect(echo.method == "GET")
            #expect(echo.path == "/echo?x=1")
            #expect(echo.headers["x-test"] == "hello")
            #expect(echo.headers["x-empty"] == "")
            #expect(echo.headers["expect"] == nil)
            #expect(echo.body == "")

            let payload = Array("hello, world".utf8)
            let post = try await client.send(HTTPClientRequest(
                method: "POST", url: "\(base)/echo",
                headers: [HTTPHeader("Content-Type", "text/plain")], body: payload))
            #expect(post.status == 200)
            #expect(post.body == payload)
            #expect(post.header("content-type") == "text/plain")
            #expect(post.header("X-Echo-Length") == "\(payload.count)")

            // Other methods carry a body too; no form Content-Type or Expect is added.
            let put = try await client.send(HTTPClientRequest(
                method: "PUT", url: "\(base)/echo", body: Array(#"{"a":1}"#.utf8)))
            let putEcho = try JSONDecoder().decode(Echo.self, from: Data(put.body))
            #expect(putEcho.method == "PUT")
            #expect(putEcho.body == #"{"a":1}"#)
            #expect(putEcho.headers["content-type"] == nil)
            #expect(putEcho.headers["expect"] == nil)

            let delete = try await client.send(HTTPClientRequest(method: "DELETE", url: "\(base)/echo"))
            #expect(try JSONDecoder().decode(Echo.self, from: Data(delete.body)).method == "DELETE")

            let emptyPost = try await client.send(HTTPClientRequest(
                method: "POST", url: "\(base)/echo", body: []))
            #expect(emptyPost.status == 200)
            #expect(emptyPost.body.isEmpty)
            #expect(emptyPost.header("x-echo-length") == "0")

            let head = try await client.send(HTTPClientRequest(method: "HEAD", url: "\(base)/big?bytes=10"))
            #expect(head.status == 200)
            #expect(head.header("content-length") == "10")
            #expect(head.body.isEmpty)

            let missing = try await client.send(HTTPClientRequest(url: "\(base)/nope"))
            #expect(missing.status == 404)
        }
    }

    @Test func responseHeadersAreParsed() async throws {
        try await withServer { base, client in
            let response = try await client.send(HTTPClientRequest(url: "\(base)/echo"))
            #expect(response.header("Content-Type") == "application/json")
            #expect(response.header("content-length") == "\(response.body.count)")
            #expect(response.header("x-multi") == "one")
            #expect(response.headers(named: "X-Multi") == ["one", "two"])
            #expect(response.header("x-absent") == nil)
            #expect(response.headers.allSatisfy { $0.name == $0.name.lowercased() })
            #expect(!response.headers.contains { $0.name.hasPrefix("http/") })
        }
    }

    @Test func sequentialRequestsReuseOneConnection() async throws {
        try await withServer { base, client in
            _ = try await client.send(HTTPClientRequest(url: "\(base)/echo"))
            _ = try await client.send(HTTPClientRequest(
                method: "POST", url: "\(base)/echo", body: Array("x".utf8)))
            let count = try await client.send(HTTPClientRequest(url: "\(base)/count"))
            #expect(text(count) == "1")
        }
    }

    /// An idle kept-alive connection is closed once older than its age, before a server's idle
    /// timeout could close it under a request.
    @Test func aConnectionIdleLongerThanItsAgeIsNotReused() async throws {
        try await withServer(configuration: { HTTPClientConfiguration(unixSocketPath: $0, maxIdleConnectionAge: .seconds(1)) }) {
            base, client in
            _ = try await client.send(HTTPClientRequest(url: "\(base)/echo"))
            #expect(text(try await client.send(HTTPClientRequest(url: "\(base)/count"))) == "1")
            try await Task.sleep(for: .milliseconds(2500))
            #expect(text(try await client.send(HTTPClientRequest(url: "\(base)/count"))) == "2")
        }
    }

    @Test func responseLargerThanTheCapFails() async throws {
        try await withServer(configuration: { HTTPClientConfiguration(unixSocketPath: $0, maxResponseBytes: 1000) }) {
            base, client in
            let error = await #expect(throws: HTTPClientError.self) {
                try await client.send(HTTPClientRequest(url: "\(base)/big?bytes=5000"))
            }
            #expect(error?.code == .responseTooLarge)
            let exact = try await client.send(HTTPClientRequest(url: "\(base)/big?bytes=1000"))
            #expect(exact.body.count == 1000)
        }
    }

    @Test func timeoutFailsAndTheClientRecovers() async throws {
        try await withServer { base, client in
            let start = ContinuousClock.now
            let error = await #expect(throws: HTTPClientError.self) {
                try await client.send(HTTPClientRequest(
                    url: "\(base)/slow?ms=2000", timeout: .milliseconds(200)))
            }
            #expect(error?.code == .timedOut)
            #expect(error?.message.lowercased().contains("timed out") == true)
            #expect(ContinuousClock.now - start < .milliseconds(1500))

            let after = try await client.send(HTTPClientRequest(url: "\(base)/slow?ms=10"))
            #expect(after.status == 200)
            #expect(text(after) == "slow")
        }
    }

    @Test func missingSocketCannotConnect() async throws {
        let client = try HTTPClient(configuration: HTTPClientConfiguration(
            unixSocketPath: "/tmp/psh-does-not-exist-\(UUID().uuidString.prefix(8)).sock"))
        defer { client.shutdown() }
        let error = await #expect(throws: HTTPClientError.self) {
            try await client.send(HTTPClientRequest(url: "http://localhost/echo"))
        }
        #expect(error?.code == .couldNotConnect)
        #expect(error?.message.contains("\n") == false)
    }

    @Test func invalidRequestsAreRejected() async throws {
        let client = try HTTPClient(configuration: HTTPClientConfiguration())
        defer { client.shutdown() }
        let badHeader = await #expect(throws: HTTPClientError.self) {
            try await client.send(HTTPClientRequest(
                url: "http://localhost/", headers: [HTTPHeader("X-Bad", "a\r\nInjected: 1")]))
        }
        #expect(badHeader?.code == .invalidRequest)
        let badMethod = await #expect(throws: HTTPClientError.self) {
            try await client.send(HTTPClientRequest(method: "GET /x", url: "http://localhost/"))
        }
        #expect(badMethod?.code == .invalidRequest)
        let badScheme = await #expect(throws: HTTPClientError.self) {
            try await client.send(HTTPClientRequest(url: "file:///etc/passwd"))
        }
        #expect(badScheme?.code == .invalidRequest)
    }

    @Test func concurrentSendsAllSucceed() async throws {
        try await withServer { base, client in
            let results = try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
                for index in 0..<20 {
                    group.addTask {
                        let response = try await client.send(HTTPClientRequest(
                            method: "POST", url: "\(base)/echo", body: Array("request \(index)".utf8)))
                        #expect(response.status == 200)
                        return (index, response.body)
                    }
                }
                var results: [Int: [UInt8]] = [:]
                for try await (index, body) in group {
                    results[index] = body
                }
                return results
            }
            #expect(results.count == 20)
            for (index, body) in results {
                #expect(String(decoding: body, as: UTF8.self) == "request \(index)")
            }
            let count = try await client.send(HTTPClientRequest(url: "\(base)/count"))
            #expect(text(count) == "1")
        }
    }

    @Test func cancellingAQueuedSendThrowsCancellationError() async throws {
        try await withServer { base, client in
            let slow = Task { try await client.send(HTTPClientRequest(url: "\(base)/slow?ms=300")) }
            try await Task.sleep(for: .milliseconds(50))
            let queued = Task { try await client.send(HTTPClientRequest(url: "\(base)/echo")) }
            try await Task.sleep(for: .milliseconds(50))
            queued.cancel()
            await #expect(throws: CancellationError.self) { try await queued.value }
            #expect(try await slow.value.status == 200)
            #expect(try await client.send(HTTPClientRequest(url: "\(base)/echo")).status == 200)
        }
    }

    @Test func shutdownFailsPendingAndLaterSends() async throws {
        try await withServer { base, client in
            #expect(try await client.send(HTTPClientRequest(url: "\(base)/echo")).status == 200)

            let running = Task { try await client.send(HTTPClientRequest(url: "\(base)/slow?ms=3000")) }
            try await Task.sleep(for: .milliseconds(50))
            let queued = Task { try await client.send(HTTPClientRequest(url: "\(base)/echo")) }
            try await Task.sleep(for: .milliseconds(50))

            client.shutdown()
            client.shutdown()  // idempotent

            let queuedError = await #expect(throws: HTTPClientError.self) { try await queued.value }
            #expect(queuedError?.code == .shutdown)
            // The running request is aborted from libcurl's progress callback.
            let runningError = await #expect(throws: HTTPClientError.self) { try await running.value }
            #expect(runningError?.code == .shutdown)

            let laterError = await #expect(throws: HTTPClientError.self) {
                try await client.send(HTTPClientRequest(url: "\(base)/echo"))
            }
            #expect(laterError?.code == .shutdown)
        }
    }
}
