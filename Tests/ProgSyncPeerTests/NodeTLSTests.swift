import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ProgSyncDaemon
import ProgSyncHTTPClient
import ServiceLifecycle
import Synchronization
import Testing

/// Mutual TLS between partner nodes (DESIGN §8): self-signed certificates pinned by SPKI hash.
@Suite struct NodeTLSTests {
    @Test func pinIsStableAndAgreesWithNIOSSLAndOpenSSL() throws {
        let identity = try NodeTLSIdentity.create(commonName: "node-a.politie")
        #expect(identity.pin.hasPrefix("sha256//"))
        #expect(identity.pin.count == "sha256//".count + 44)
        #expect(try NodeTLSIdentity.pin(ofCertificatePEM: identity.certificatePEM) == identity.pin)

        // The server callback's way: the leaf as NIOSSL sees it, SPKI re-encoded by BoringSSL.
        let nioCertificate = try NIOSSLCertificate(bytes: Array(identity.certificatePEM.utf8), format: .pem)
        let spki = try nioCertificate.extractPublicKey().toSPKIBytes()
        #expect(NodeTLSIdentity.pin(ofSubjectPublicKeyInfoDER: spki) == identity.pin)
        #expect(try NodeTLSIdentity.pin(of: nioCertificate) == identity.pin)

        // A second identity has another key, so another pin.
        let other = try NodeTLSIdentity.create(commonName: "node-a.politie")
        #expect(other.pin != identity.pin)

        // And the way an operator would compute it with the openssl tool (curl's documented recipe).
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") {
            let folder = try TLSTestFolder()
            let certificatePath = folder.path("cert.pem")
            try identity.certificatePEM.write(toFile: certificatePath, atomically: true, encoding: .utf8)
            let output = try runTool(
                "/bin/sh",
                ["-c", "openssl x509 -in '\(certificatePath)' -pubkey -noout | openssl pkey -pubin -outform der"
                    + " | openssl dgst -sha256 -binary | openssl enc -base64"])
            #expect("sha256//" + output.trimmingCharacters(in: .whitespacesAndNewlines) == identity.pin)
        }
    }

    @Test func writeThenLoadRoundTrips() throws {
        let identity = try NodeTLSIdentity.create(commonName: "node-b.comensha", validFor: .seconds(3600))
        let folder = try TLSTestFolder()
        let certificatePath = folder.path("tls.crt")
        let keyPath = folder.path("tls.key")
        try identity.write(certificatePath: certificatePath, keyPath: keyPath)

        let keyMode = try FileManager.default.attributesOfItem(atPath: keyPath)[.posixPermissions] as? Int
        #expect(keyMode == 0o600)

        let loaded = try NodeTLSIdentity.load(certificatePath: certificatePath, keyPath: keyPath)
        #expect(loaded.pin == identity.pin)
        #expect(loaded.certificatePEM == identity.certificatePEM)
        #expect(loaded.privateKeyPEM == identity.privateKeyPEM)

        // Refuses to overwrite: a node keeps its identity.
        let other = try NodeTLSIdentity.create(commonName: "other")
        #expect(throws: NodeTLSError.self) {
            try other.write(certificatePath: folder.path("other.crt"), keyPath: keyPath)
        }
        #expect(!FileManager.default.fileExists(atPath: folder.path("other.crt")))
        #expect(try NodeTLSIdentity.load(certificatePath: certificatePath, keyPath: keyPath).pin == identity.pin)

        // A key that does not belong to the certificate is refused.
        try other.write(certificatePath: folder.path("other.crt"), keyPath: folder.path("other.key"))
        #expect(throws: NodeTLSError.self) {
            try NodeTLSIdentity.load(certificatePath: certificatePath, keyPath: folder.path("other.key"))
        }
    }

    @Test func listenerAcceptsOnlyPinnedClientsAndClientChecksServerPin() async throws {
        let server = try NodeTLSIdentity.create(commonName: "server")
        let clientA = try NodeTLSIdentity.create(commonName: "client-a")
        let clientB = try NodeTLSIdentity.create(commonName: "client-b")
        let folder = try TLSTestFolder()
        try clientA.write(certificatePath: folder.path("a.crt"), keyPath: folder.path("a.key"))
        try clientB.write(certificatePath: folder.path("b.crt"), keyPath: folder.path("b.key"))

        let recorder = TLSLogRecorder()
        let tlsLogger = Logger(label: "peer-tls") { _ in TLSRecordingLogHandler(recorder: recorder) }
        let allowed = Mutex<Set<String>>([clientA.pin])
        let tls = try peerServerTLSConfiguration(
            identity: server, allowedPins: { allowed.withLock { $0 } }, logger: tlsLogger)

        let pings = Atomic<Int>(0)
        let router = Router()
        router.get("/ping") { _, _ -> String in
            pings.add(1, ordering: .relaxed)
            return "pong"
        }
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        var appLogger = Logger(label: "peer-tls-test-app")
        appLogger.logLevel = .error
        let app = Application(
            router: router,
            server: try .tls(.http1(), configuration: tls),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: appLogger
        )
        let serviceGroup = ServiceGroup(configuration: .init(services: [app], logger: appLogger))
        let serverTask = Task { try await serviceGroup.run() }
        defer { serverTask.cancel() }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        try #require(port > 0)
        let url = "https://127.0.0.1:\(port)/ping"

        func get(_ tls: HTTPClientConfiguration.TLS) async throws -> HTTPClientResponse {
            let client = try HTTPClient(
                configuration: .init(connectTimeout: .seconds(5), requestTimeout: .seconds(5), tls: tls))
            defer { client.shutdown() }
            return try await client.send(HTTPClientRequest(url: url).asPartner())
        }
        func expectRefused(
            _ tls: HTTPClientConfiguration.TLS, codes: [HTTPClientError.Code],
            sourceLocation: SourceLocation = #_sourceLocation
        ) async {
            do {
                let response = try await get(tls)
                Issue.record("expected a refusal, got HTTP \(response.status)", sourceLocation: sourceLocation)
            } catch let error as HTTPClientError {
                #expect(codes.contains(error.code), "\(error)", sourceLocation: sourceLocation)
            } catch {
                Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
            }
        }

        // Client A: pinned by the server, pins the server → served.
        let ok = try await get(
            peerClientTLS(certificatePath: folder.path("a.crt"), keyPath: folder.path("a.key"), peerPin: server.pin))
        #expect(ok.status == 200)
        #expect(String(decoding: ok.body, as: UTF8.self) == "pong")
        #expect(pings.load(ordering: .relaxed) == 1)

        // No client certificate at all → refused in the handshake.
        await expectRefused(
            HTTPClientConfiguration.TLS(pinnedPublicKey: server.pin, verifyPeer: false, verifyHost: false),
            codes: [.tls, .transport])

        // Client B: a valid self-signed certificate, but not in the partner registry → refused, logged.
        let clientBTLS = peerClientTLS(
            certificatePath: folder.path("b.crt"), keyPath: folder.path("b.key"), peerPin: server.pin)
        await expectRefused(clientBTLS, codes: [.tls, .transport])
        let refusals = recorder.entries.withLock { $0 }
        #expect(refusals.contains {
            $0.level == .warning && $0.message == "peer TLS refused: client certificate not in the partner registry"
                && $0.metadata["pin"] == clientB.pin
        })
        #expect(!refusals.contains { $0.metadata["pin"] == clientA.pin })

        // Client A expecting another server key (a man in the middle, or a stale registry) → curl refuses.
        await expectRefused(
            peerClientTLS(certificatePath: folder.path("a.crt"), keyPath: folder.path("a.key"), peerPin: clientB.pin),
            codes: [.tls])

        // Nothing but the first request ever reached the handler.
        #expect(pings.load(ordering: .relaxed) == 1)

        // allowedPins is consulted per handshake: admitting B (a reloaded registry) lets it in.
        allowed.withLock { _ = $0.insert(clientB.pin) }
        let admitted = try await get(clientBTLS)
        #expect(admitted.status == 200)
        #expect(pings.load(ordering: .relaxed) == 2)

        await serviceGroup.triggerGracefulShutdown()
        try await serverTask.value
    }
}

// MARK: - Helpers

/// A temporary folder, removed when the value is released.
private final class TLSTestFolder {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
}

private func runTool(_ executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

private final class TLSLogRecorder: Sendable {
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    let entries = Mutex<[Entry]>([])
}

private struct TLSRecordingLogHandler: LogHandler {
    let recorder: TLSLogRecorder
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        recorder.entries.withLock {
            $0.append(.init(
                level: event.level, message: "\(event.message)",
                metadata: merged.mapValues { "\($0)" }))
        }
    }
}
