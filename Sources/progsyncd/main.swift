// progsyncd: the progsync node daemon. Parses arguments and hands over to ProgSyncDaemon.
import ArgumentParser
import CMalloc
import Configuration
import SystemPackage
import Foundation
import Logging
import Metrics
import ProgSyncBuildInfo
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncStore

@main
struct ProgSyncD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "progsyncd",
        abstract: "The progsync node: a durable replica of the programme's records, served on a Unix socket.",
        discussion: """
            With no arguments it runs a single node in ./progsync-data (or $PROGSYNC_DATA), creating \
            its identity and loading the 2021 programme on first start. Talk to it with `progsync`.

            Example: progsyncd --config Config/progsyncd.example.yaml
            """,
        version: BuildInfo.versionLine("progsyncd"),
        subcommands: [Run.self, Init.self, Restore.self, RotateKey.self],
        defaultSubcommand: Run.self)
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon (the default).")

    @Option(name: .long, help: "YAML configuration file (keys under `progsync:`; see Config/progsyncd.example.yaml).")
    var config: String?

    @Option(name: .long, help: "Data folder (overrides progsync.data and $PROGSYNC_DATA).")
    var dataDir: String?

    @Option(name: .long, help: "Local API socket path (default: <data>/progsync.sock).")
    var socket: String?

    @Flag(name: .long, help: "Start with an empty replica instead of the 2021 programme.")
    var empty = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    func run() async throws {
        // glibc gives each of up to 8×cores threads an arena of its own; what a partner's first
        // pull of the replica leaves freed in them stays mapped. Two arenas: spokes of a
        // 50-node network 59 MB instead of 61 MB RSS, the hub 83 instead of 85.
        mallopt(M_ARENA_MAX, 2)
        // Whatever the daemon creates (replica, reports, registry) is for its own user only.
        umask(0o077)
        var configuration = try await loadConfiguration(config: config, dataDir: dataDir)
        if let socket { configuration.socketPath = socket }
        if empty { configuration.loadSampleData = false }
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
            configuration.logLevel = level
        }
        let level = configuration.logLevel, format = configuration.logFormat
        LoggingSystem.bootstrap { StructuredLogHandler(label: $0, level: level, format: format) }
        let logger = Logger(label: "progsyncd")
        do {
            // One registry for the daemon's metrics and Hummingbird's request metrics.
            let metrics = DaemonMetrics()
            MetricsSystem.bootstrap(metrics.factory)
            let daemon = try buildDaemon(configuration: configuration, logger: logger, metrics: metrics)
            try await daemon.run()
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("progsyncd: \(error.description)\n".utf8))
            throw ExitCode(1)
        } catch let error as ReplicaError {
            // A replica from a newer version, say: one line, no stack of wrappers.
            FileHandle.standardError.write(Data("progsyncd: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// The daemon's configuration from the environment, an optional YAML file and --data-dir.
func loadConfiguration(config: String?, dataDir: String?) async throws -> DaemonConfiguration {
    var providers: [any ConfigProvider] = [EnvironmentVariablesProvider()]
    if let config {
        guard FileManager.default.fileExists(atPath: config) else { throw ValidationError("no configuration file at \(config)") }
        providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(config)))
    }
    do {
        return try DaemonConfiguration(reader: ConfigReader(providers: providers), dataDirectory: dataDir)
    } catch {
        throw ValidationError("\(error)")
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace this node's replica with a backup made by `progsync backup` (the daemon must be stopped).",
        discussion: """
            The file is checked first (SQLite integrity, digest, that it is a backup of this node);             the previous replica is kept beside it as replica.sqlite.before-restore-<time>. After             the restore the node takes back from its partners the commits it made after the backup,             and accepts local writes again once every partner has answered (or after             `progsync resume-writes`).

            Example: progsyncd restore /backup/progsync-2026-12-01.sqlite --data-dir /var/lib/progsync
            """)

    @Argument(help: "The backup file.")
    var file: String

    @Option(name: .long, help: "YAML configuration file, for progsync.data.")
    var config: String?

    @Option(name: .long, help: "Data folder of the node (overrides progsync.data and $PROGSYNC_DATA).")
    var dataDir: String?

    func run() async throws {
        umask(0o077)
        let configuration = try await loadConfiguration(config: config, dataDir: dataDir)
        do {
            let outcome = try restoreReplica(configuration: configuration, from: file)
            print("""
                restored:  \(file) → \(configuration.dataDirectory)/replica.sqlite
                digest:    \(Hex.encode(outcome.check.digest))
                taken at:  \(Stamp.iso8601(milliseconds: outcome.check.manifest?.takenAt ?? 0))
                previous:  \(outcome.previous ?? "none (the folder had no replica)")
                next:      start progsyncd; local writes wait until its partners have given back this node's newer commits
                """)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("progsyncd: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
    }
}

func writeJoinRequest(_ request: JSONValue, to path: String) throws {
    do {
        try (request.prettyString() + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    } catch {
        FileHandle.standardError.write(Data("progsyncd: cannot write the join request \(path): \(error.localizedDescription)\n".utf8))
        throw ExitCode(1)
    }
}

struct RotateKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Give this node a new key and TLS certificate (the daemon must be stopped); a coordinator admits it.",
        discussion: """
            The old identity and TLS files are kept beside the new ones (.before-rotation-<time>). The \
            request names the old node and its last commit: `progsync partners add FILE` at a \
            coordinator admits the new key and retires the old one after that commit, in one commit. \
            Sync first (`progsync sync`), so partners hold every commit made under the old key.

            Example: progsyncd rotate-key --data-dir /var/lib/progsync --address https://progsync.politie.example:7441 \\
                       --request politie-utrecht.rotate.json
            """)

    @Option(name: .long, help: "YAML configuration file, for progsync.data.")
    var config: String?

    @Option(name: .long, help: "Data folder of the node (overrides progsync.data and $PROGSYNC_DATA).")
    var dataDir: String?

    @Option(name: .long, help: "Where partners reach this node, for the request (e.g. https://HOST:PORT).")
    var address: String?

    @Option(name: .long, help: "Write the request for the coordinator here.")
    var request: String

    func run() async throws {
        umask(0o077)
        let configuration = try await loadConfiguration(config: config, dataDir: dataDir)
        let rotation: KeyRotation
        do {
            rotation = try rotateNodeKey(configuration: configuration)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("progsyncd: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
        try writeJoinRequest(NodeFiles.joinRequest(rotation.new, pin: rotation.pin, address: address,
                                                   replaces: (rotation.old.identity.id, rotation.oldLastSeq)), to: request)
        print("""
            old node:    \(rotation.old.identity.id) (its last commit: \(rotation.oldLastSeq); files kept as *\(rotation.keptAs))
            new node:    \(rotation.new.identity.id)
            certificate: \(rotation.pin)
            request:     \(request)

            Next: a coordinator runs `progsync partners add \(request)`, which admits the new key and
            retires the old one after commit \(rotation.oldLastSeq). Until then partners hold this node's new commits.
            """)
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a node identity; with --invite, join the partnership through a coordinator.",
        discussion: """
            With an invite (made at a coordinator by `progsync partners invite`), the node presents \
            it to the coordinator over mutual TLS and is admitted at once; then start progsyncd and \
            it pulls the whole replica, the partnership included. A refused invite changes nothing.

              progsyncd init --data-dir /var/lib/progsync --invite politie.invite \\
                --name politie-utrecht --address https://progsync.politie.example:7441

            Offline, add --request FILE: the node is set up from the invite and the request is \
            written instead; the coordinator admits it with `progsync partners add FILE` and sends \
            back a bundle (`progsync bundle export`, then `progsync bundle import` here).

            Without an invite: progsyncd init --data-dir DIR --org politie --request FILE, and the \
            coordinator's registry.json copied in by hand.
            """)

    @Option(name: .long, help: "Data folder for the new node.")
    var dataDir: String = ProcessInfo.processInfo.environment["PROGSYNC_DATA"] ?? "./progsync-data"

    @Option(name: .long, help: "Organisation code, e.g. politie, om, comensha, jenv (with --invite: the invite's).")
    var org: String?

    @Option(name: .long, help: "A name for this node, shown to partners.")
    var name: String?

    @Option(name: .long, help: "Where partners reach this node's peer listener, e.g. https://progsync.politie.example:7441 (none: it only dials out).")
    var address: String?

    @Option(name: .long, help: "An invite file from a coordinator (`progsync partners invite`).")
    var invite: String?

    @Option(name: .long, help: "Write a join request for `progsync partners add FILE` (with --invite: instead of calling the coordinator).")
    var request: String?

    func validate() throws {
        if let org, !ProgrammeSchema.isValidOrgCode(org) { throw ValidationError("--org must be a lower-case code like politie ([a-z0-9-])") }
        if org == nil, invite == nil { throw ValidationError("give --org CODE, or --invite FILE from a coordinator") }
        if let address, !(address.hasPrefix("https://") || address.hasPrefix("http://")) || address.contains(where: \.isWhitespace) || address.utf8.count > 500 {
            throw ValidationError("--address must be an https:// address, e.g. https://progsync.politie.example:7441")
        }
    }

    func run() async throws {
        umask(0o077)
        if let invite {
            try await join(invite)
            return
        }
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let node: NodeFiles.StoredIdentity
        let tls: NodeTLSIdentity
        do {
            node = try NodeFiles.createIdentity(at: dataDir + "/identity.json", org: org!, name: name)
            tls = try NodeTLSIdentity.create(commonName: name ?? node.identity.id.rawValue)
            try tls.write(certificatePath: dataDir + "/tls-cert.pem", keyPath: dataDir + "/tls-key.pem")
        } catch {
            FileHandle.standardError.write(Data("progsyncd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if let request { try writeJoinRequest(NodeFiles.joinRequest(node, pin: tls.pin, address: address), to: request) }
        print("""
            node:        \(node.identity.id)
            org:         \(node.org)
            name:        \(node.name ?? "-")
            public key:  \(node.identity.publicKeyBase64)
            certificate: \(tls.pin)
            identity:    \(dataDir)/identity.json, \(dataDir)/tls-key.pem (keep them private)

            \(request.map { "join request: \($0) (a coordinator admits it: progsync partners add \($0))\n" } ?? "")
            Registry entry for partners (add "address": "https://HOST:PORT" if partners can reach it):
            \(JSONValue.object(["id": .string(node.identity.id.rawValue), "name": .string(node.name ?? node.identity.id.rawValue), "publicKey": .string(node.identity.publicKeyBase64), "certificatePin": .string(tls.pin)]).prettyString())
            """)
    }

    func join(_ invite: String) async throws {
        let outcome: NodeJoin.Outcome
        do {
            outcome = try await NodeJoin.join(dataDirectory: dataDir, invitePath: invite, org: org, name: name, address: address, offlineRequest: request)
        } catch {
            FileHandle.standardError.write(Data("progsyncd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        print("""
            node:        \(outcome.node.identity.id)
            org:         \(outcome.org)
            name:        \(outcome.node.name ?? "-")
            certificate: \(outcome.pin)
            identity:    \(dataDir)/identity.json, \(dataDir)/tls-key.pem (keep them private)
            """)
        if let commit = outcome.commit {
            print("""
                admitted:    by coordinator node \(outcome.coordinator) in commit \(commit)

                Next: start progsyncd (with progsync.peers.listen if partners should reach it); it pulls
                the whole replica from the coordinator, the partnership included.
                """)
        } else {
            print("""
                join request: \(request!)

                Next: the coordinator runs `progsync partners add \(request!)` and sends back a bundle
                (`progsync bundle export --all -o FILE`); here, start progsyncd and `progsync bundle import FILE`.
                """)
        }
    }
}
