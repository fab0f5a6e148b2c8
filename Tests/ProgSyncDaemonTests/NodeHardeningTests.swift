import Foundation
import Logging
import ProgSyncCore
import ProgSyncStore
import Testing

@testable import ProgSyncDaemon

/// Small hardening items from the security review: loopback checks, log injection, file modes.
struct LoopbackTests {
    @Test(arguments: [
        "localhost", "LocalHost", "127.0.0.1", "127.255.255.254", "127.0.1.1",
        "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "::FFFF:7f00:1",
    ])
    func loopbackAddresses(host: String) {
        #expect(isLoopback(host: host))
    }

    /// Names that go to DNS, and spellings that resolvers read differently from `inet_pton`, are
    /// refused: a peer allowed plain HTTP must be on this machine, not merely start with "127.".
    @Test(arguments: [
        "127.0.0.1.evil.tld", "127.evil.tld", "127.", "127.1", "127.0.1", "0x7f.0.0.1", "0177.0.0.1",
        "2130706433", "127.0.0.01", "localhost.", "evil.localhost", "localhost.evil.tld", "[localhost]",
        "::1%lo", "[::1", "::", "::2", "::127.0.0.1", "::ffff:10.0.0.1", "10.0.0.1", "0.0.0.0",
        "128.0.0.1", "", " 127.0.0.1", "127.0.0.1 ",
    ])
    func notLoopback(host: String) {
        #expect(!isLoopback(host: host))
    }

    /// The check where it counts: a partner's plain-http address in the registry.
    @Test(arguments: [("http://127.0.0.1.evil.tld:7000", false), ("http://127.0.0.1:7000", true), ("http://[::1]:7000", true)])
    func plainHTTPPeerAddress(address: String, allowed: Bool) throws {
        var configuration = DaemonConfiguration(dataDirectory: "/nonexistent")
        configuration.peerPlainHTTP = true
        let me = NodeFiles.StoredIdentity(identity: NodeIdentity(), org: "jenv", name: "hub")
        let peer = NodeIdentity()
        let registry = PartnerRegistry(
            nodes: [.init(org: "jenv", publicKey: me.identity.publicKey), .init(org: "politie", publicKey: peer.publicKey, address: address)],
            coordinators: ["jenv"])
        let make = { try makePeerEndpoints(configuration, registry: registry, me: me, logger: Logger(label: "test")) }
        if allowed {
            #expect(try make().map(\.address) == [address])
        } else {
            #expect(throws: ConfigurationError.self) { try make() }
        }
    }
}

struct LogfmtTests {
    /// Splits a logfmt line the way a reader does: unquoted values end at a space, quoted ones at
    /// an unescaped quote. Returns nil when the line is malformed.
    static func parse(_ line: String) -> [(String, String)]? {
        var out: [(String, String)] = []
        var scalars = Array(line.unicodeScalars)[...]
        while !scalars.isEmpty {
            guard let eq = scalars.firstIndex(of: "=") else { return nil }
            let key = String(String.UnicodeScalarView(scalars[..<eq]))
            scalars = scalars[(eq + 1)...]
            var value = ""
            if scalars.first == "\"" {
                scalars = scalars.dropFirst()
                var closed = false
                while let c = scalars.popFirst() {
                    if c == "\"" { closed = true; break }
                    if c == "\\", let e = scalars.popFirst() {
                        switch e {
                        case "n": value += "\n"
                        case "r": value += "\r"
                        case "t": value += "\t"
                        case "u", "U":
                            let width = e == "u" ? 4 : 8
                            guard scalars.count >= width, let v = UInt32(String(String.UnicodeScalarView(scalars.prefix(width))), radix: 16),
                                  let u = Unicode.Scalar(v) else { return nil }
                            value.unicodeScalars.append(u)
                            scalars = scalars.dropFirst(width)
                        default: value.unicodeScalars.append(e)
                        }
                    } else {
                        value.unicodeScalars.append(c)
                    }
                }
                guard closed else { return nil }
            } else {
                let end = scalars.firstIndex(of: " ") ?? scalars.endIndex
                value = String(String.UnicodeScalarView(scalars[..<end]))
                scalars = scalars[end...]
            }
            out.append((key, value))
            if scalars.first == " " { scalars = scalars.dropFirst() } else if !scalars.isEmpty { return nil }
        }
        return out
    }

    /// A value from a request or a partner cannot end the line or forge a field.
    @Test(arguments: [
        "a\rlevel=critical msg=forged", "a\nlevel=critical", "a\r\nb", "tab\there", "nul\u{0}x", "esc\u{1B}[31mred",
        "del\u{7F}", "nel\u{85}next", "ls\u{2028}ps\u{2029}", "bidi\u{202E}txt", "quote\" and \\ backslash",
        "k=v", "", "plain", "with space", "nbsp\u{A0}x", "emoji 😀", "tag\u{E0001}",
    ])
    func valuesRoundTripOnOneLine(value: String) throws {
        let line = StructuredLogHandler.logfmt([("msg", "hello"), ("record", value), ("n", "1")])
        #expect(!line.unicodeScalars.contains { $0.properties.generalCategory == .control
            || $0.properties.generalCategory == .lineSeparator || $0.properties.generalCategory == .paragraphSeparator
            || $0.properties.generalCategory == .format })
        let fields = try #require(Self.parse(line), "malformed: \(line)")
        #expect(fields.map(\.0) == ["msg", "record", "n"])
        #expect(fields[1].1 == value)
    }

    @Test func plainValuesStayUnquoted() {
        #expect(StructuredLogHandler.logfmt([("node", "abc-123"), ("path", "/v1/records/al1.r01")]) == "node=abc-123 path=/v1/records/al1.r01")
    }

    @Test func keysCannotForgeFields() {
        let line = StructuredLogHandler.logfmt([("a b=c\r", "1")])
        #expect(line == "a_b_c_=1")
    }
}

/// File modes of a real data folder, and the start-up checks on them.
@Suite(.serialized)
struct DataFolderPermissionTests {
    static func mode(_ path: String) throws -> Int {
        try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    static func withFolder(_ body: (DaemonConfiguration, Logger) async throws -> Void) async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-perm-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = DaemonConfiguration(dataDirectory: folder.appendingPathComponent("data").path)
        configuration.loadSampleData = false
        var logger = Logger(label: "progsyncd-test")
        logger.logLevel = .critical
        try await body(configuration, logger)
    }

    /// Starts the daemon until it answers, writes once, and stops it.
    static func runOnce(_ configuration: DaemonConfiguration, _ logger: Logger) async throws {
        let daemon = try buildDaemon(configuration: configuration, logger: logger)
        _ = try daemon.replica.commitLocal(author: "test", writes: [.init(record: "perm.al1", field: "kind", value: "action-line")])
        let run = Task { try await daemon.run() }
        let up = await eventually(timeout: 20) { FileManager.default.fileExists(atPath: configuration.socketPath) }
        #expect(up)
        run.cancel()
        _ = try? await run.value
    }

    @Test func replicaKeyAndFolderArePrivate() async throws {
        try await Self.withFolder { configuration, logger in
            let daemon = try buildDaemon(configuration: configuration, logger: logger)
            _ = try daemon.replica.commitLocal(author: "test", writes: [.init(record: "perm.al1", field: "kind", value: "action-line")])
            // While the daemon has the replica open, its WAL files exist too.
            for path in [configuration.replicaPath, configuration.replicaPath + "-wal", configuration.replicaPath + "-shm",
                         configuration.identityPath, configuration.tlsKeyPath] {
                #expect(try Self.mode(path) == 0o600, "\(path)")
            }
            #expect(try Self.mode(configuration.dataDirectory) == 0o700)
            let report = try ReconcileReports(directory: configuration.reportsPath, keepDays: 1).save(["startedMs": 1_800_000_000_000])
            let id = try #require(report["id"]?.stringValue)
            #expect(try Self.mode(configuration.reportsPath) == 0o700)
            #expect(try Self.mode(configuration.reportsPath + "/\(id).json") == 0o600)
            try daemon.replica.close()
        }
    }

    /// A replica left 0644 by an older version is tightened at the next start.
    @Test func oldWorldReadableReplicaIsTightened() async throws {
        try await Self.withFolder { configuration, logger in
            try await Self.runOnce(configuration, logger)
            chmod(configuration.replicaPath, 0o644)
            let daemon = try buildDaemon(configuration: configuration, logger: logger)
            #expect(try Self.mode(configuration.replicaPath) == 0o600)
            try daemon.replica.close()
        }
    }

    @Test(arguments: [0o644, 0o604, 0o620, 0o602])
    func startRefusesAKeyOthersCanReadOrWrite(mode: Int) async throws {
        try await Self.withFolder { configuration, logger in
            try await Self.runOnce(configuration, logger)
            for key in [configuration.identityPath, configuration.tlsKeyPath] {
                chmod(key, mode_t(mode))
                let error = try #require(throws: ConfigurationError.self) { try buildDaemon(configuration: configuration, logger: logger) }
                #expect(error.description.contains("chmod 600 \(key)"), "\(error)")
                #expect(!error.description.contains("\n"))
                chmod(key, 0o600)
            }
            // Group read is allowed (keys in a shared key store such as ssl-cert).
            chmod(configuration.tlsKeyPath, 0o640)
            let daemon = try buildDaemon(configuration: configuration, logger: logger)
            try daemon.replica.close()
        }
    }

    @Test func startRefusesADataFolderOthersCanWrite() async throws {
        try await Self.withFolder { configuration, logger in
            try await Self.runOnce(configuration, logger)
            chmod(configuration.dataDirectory, 0o777)
            let error = try #require(throws: ConfigurationError.self) { try buildDaemon(configuration: configuration, logger: logger) }
            #expect(error.description.contains("chmod 700 \(configuration.dataDirectory)"), "\(error)")
            chmod(configuration.dataDirectory, 0o750)
            let daemon = try buildDaemon(configuration: configuration, logger: logger)
            try daemon.replica.close()
        }
    }
}
