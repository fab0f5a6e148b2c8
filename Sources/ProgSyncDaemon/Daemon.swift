import Foundation
import Hummingbird
import Logging
import NIOCore
import ProgSyncCore
import ProgSyncStore
import ServiceLifecycle
import UnixSignals

/// A built daemon: open replica, held data-folder lock, and the services to run.
public struct Daemon: Sendable {
    public let configuration: DaemonConfiguration
    public let replica: Replica
    public let node: NodeFiles.StoredIdentity
    let services: [any Service]
    let lock: LockBox
    let logger: Logger

    /// Runs until SIGTERM or SIGINT, then drains in-flight requests and returns.
    public func run() async throws {
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        try replica.close()
        try? FileManager.default.removeItem(atPath: configuration.socketPath)
        logger.info("stopped")
        _ = lock
    }
}

final class LockBox: Sendable {
    nonisolated(unsafe) let lock: DataFolderLock
    init(_ lock: DataFolderLock) { self.lock = lock }
}

/// Builds the daemon from its configuration: creates the data folder, identity and registry on
/// first start (the zero-config node belongs to the coordinating org `jenv`), opens the replica,
/// loads the sample programme into a new replica, and wires the local API.
public func buildDaemon(configuration: DaemonConfiguration, logger: Logger) throws -> Daemon {
    let fm = FileManager.default
    try fm.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let lock = try DataFolderLock(path: configuration.lockPath)
    var node = try NodeFiles.readIdentity(at: configuration.identityPath)
    if node == nil {
        node = try NodeFiles.createIdentity(at: configuration.identityPath, org: "jenv", name: "progsyncd")
        logger.info("created node identity", metadata: ["node": "\(node!.identity.id)", "org": "jenv"])
    }
    let me = node!
    var registry = try NodeFiles.readRegistry(at: configuration.registryPath)
    if registry == nil {
        registry = try NodeFiles.writeSingleNodeRegistry(at: configuration.registryPath, node: me)
        logger.info("created single-node registry", metadata: ["path": "\(configuration.registryPath)"])
    }
    if registry!.node(me.identity.id) == nil {
        logger.warning("this node is not in the partner registry; partners will hold its commits", metadata: ["node": "\(me.identity.id)"])
    }
    let replica = try Replica(configuration: ReplicaConfiguration(
        path: configuration.replicaPath, identity: me.identity, org: me.org, registry: registry!,
        maxClockOffsetMilliseconds: UInt64(configuration.maxClockOffsetSeconds) * 1000))
    if configuration.loadSampleData, try replica.lastLSN == 0 {
        let count = try LocalAPI.loadSample(into: replica, org: me.org)
        logger.info("loaded the 2021 programme", metadata: ["records": "\(count)"])
    }
    let events = EventBroadcaster(startingAfter: try replica.lastLSN)
    let api = LocalAPI(replica: replica, node: me, limits: configuration.limits, events: events)
    let router = Router(context: LocalRequestContext.self)
    router.middlewares.add(JSONErrorMiddleware())
    api.addRoutes(to: router)

    // The lock proves no other daemon owns this folder, so a leftover socket is stale.
    if fm.fileExists(atPath: configuration.socketPath) { try fm.removeItem(atPath: configuration.socketPath) }
    let socketPath = configuration.socketPath
    let app = Application(
        router: router,
        configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: nil),
        onServerRunning: { _ in
            chmod(socketPath, 0o660)
            logger.info("listening", metadata: ["socket": "\(socketPath)", "node": "\(me.identity.id)", "org": "\(me.org)"])
        },
        logger: logger)
    return Daemon(configuration: configuration, replica: replica, node: me, services: [events, app], lock: LockBox(lock), logger: logger)
}
