import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import ProgSyncHTTPClient
import NIOCore
import NIOSSL
import ProgSyncCore
import ProgSyncStore
import ServiceLifecycle
import Synchronization
import UnixSignals

/// A built daemon: open replica, held data-folder lock, and the services to run.
public struct Daemon: Sendable {
    public let configuration: DaemonConfiguration
    public let replica: Replica
    public let node: NodeFiles.StoredIdentity
    let audit: AuditLog
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
        audit.close()
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
/// loads the sample programme into a new replica, and wires the local API. `metrics` is where
/// the daemon's own metrics go; `progsyncd` bootstraps swift-metrics with its factory, so the
/// HTTP metrics land there too.
public func buildDaemon(configuration: DaemonConfiguration, logger: Logger, metrics: DaemonMetrics = DaemonMetrics()) throws -> Daemon {
    let fm = FileManager.default
    try fm.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    try NodeFiles.checkDataFolder(configuration.dataDirectory)
    let lock = try DataFolderLock(path: configuration.lockPath)
    try NodeFiles.checkKeyFile(configuration.identityPath)
    var node = try NodeFiles.readIdentity(at: configuration.identityPath)
    if node == nil {
        node = try NodeFiles.createIdentity(at: configuration.identityPath, org: "jenv", name: "progsyncd")
        logger.info("created node identity", metadata: ["node": "\(node!.identity.id)", "org": "jenv"])
    }
    let me = node!
    try NodeFiles.checkKeyFile(configuration.tlsKeyPath)
    let tls = try loadOrCreateTLS(configuration, name: me.name ?? me.identity.id.rawValue, logger: logger)
    var registry = try NodeFiles.readRegistry(at: configuration.registryPath)
    if registry == nil {
        registry = try NodeFiles.writeSingleNodeRegistry(at: configuration.registryPath, node: me, certificatePin: tls.pin)
        logger.info("created single-node registry", metadata: ["path": "\(configuration.registryPath)"])
    }
    let joined = fm.fileExists(atPath: NodeJoin.markerPath(configuration.dataDirectory))
    if registry!.node(me.identity.id) == nil, !joined {
        logger.warning("this node is not in the partner registry; partners will hold its commits", metadata: ["node": "\(me.identity.id)"])
    }
    let audit = try AuditLog(path: configuration.auditPath, logger: logger)
    audit.noteRegistry(registry!, file: configuration.registryPath)
    try NodeFiles.makeReplicaPrivate(configuration.replicaPath)
    let replica = try Replica(configuration: ReplicaConfiguration(
        path: configuration.replicaPath, identity: me.identity, org: me.org, registry: registry!,
        maxClockOffsetMilliseconds: UInt64(configuration.maxClockOffsetSeconds) * 1000, schemaVersion: configuration.schemaVersion))
    // A node that joined gets the programme from its partners.
    if configuration.loadSampleData, !joined, try replica.lastLSN == 0, replica.ownChainCatchUp == nil {
        let count = try LocalAPI.loadSample(into: replica, org: me.org)
        logger.info("loaded the 2021 programme", metadata: ["records": "\(count)"])
    }
    let events = try EventBroadcaster(following: replica)
    // The group stops services in reverse order: the event broadcaster goes first, ending SSE
    // streams and long polls, so the listeners can drain at once.
    var services: [any Service] = []
    // The registry in force: the trust root with the coordinators' membership records.
    let endpoints = try makePeerEndpoints(configuration, registry: replica.registry, me: me, logger: logger)
    let dialling = PairDialling(me: me.identity.id, peersConnect: configuration.peerConnect)
    let peerSet = try PeerSet(
        initial: endpoints, replica: replica, logger: logger,
        endpoints: { registry in liveEndpoints(configuration, registry: registry, me: me, logger: logger) },
        make: { p in
            try PeerReplicator(peer: p.node, address: p.address, tls: p.tls, replica: replica, events: events, dialling: dialling, metrics: metrics, audit: audit, logger: logger)
        })
    let replicators = peerSet.replicators
    services.append(peerSet)
    if replica.ownChainCatchUp != nil {
        replica.expectOwnChain(from: Set(replicators.map(\.peer.id)))
        logger.info("restored from a backup: local writes wait until partners give back this node's newer commits",
                    metadata: ["partners": "\(replicators.map { $0.peer.name ?? $0.peer.id.rawValue })"])
    }
    let inbound = InboundContact(dialling: dialling)
    let notifier = SystemdNotifier()
    let listeners = ["local"] + (configuration.peerListen != nil ? ["peer"] : []) + (configuration.metricsListen != nil ? ["metrics"] : [])
    let readiness = Readiness(replica: replica, listeners: listeners, notifier: notifier, logger: logger)
    services.append(readiness)
    let committer = GroupCommitter(replica: replica, metrics: metrics)
    let invites = try InviteBook(path: configuration.invitesPath)
    if let listen = configuration.peerListen {
        services.append(try makePeerListener(listen, configuration, tls: tls, replica: replica, me: me, events: events,
                                             inbound: inbound, metrics: metrics, audit: audit, committer: committer, invites: invites,
                                             onBound: { readiness.bound("peer") }, logger: logger))
    }
    let reports = ReconcileReports(directory: configuration.reportsPath, keepDays: configuration.reconcileKeepDays)
    metrics.loadReconciliations(reports)
    let reconciler = Reconciler(replica: replica, peers: { peerSet.activeEndpoints }, reports: reports, audit: audit, logger: logger, metrics: metrics)
    services.append(NightlyJobs(reconciler: reconciler, schedule: configuration.reconcileSchedule, reports: reports,
                                replica: replica, audit: audit, logger: logger))
    let heartbeat = WriterHeartbeat(replica: replica, notifier: notifier, logger: logger)
    services.append(NightlyBackup(replica: replica, schedule: configuration.backupSchedule, folder: configuration.backupFolder,
                                  keep: configuration.backupKeep, logger: logger))
    let api = LocalAPI(replica: replica, node: me, limits: configuration.limits, events: events,
                       committer: committer,
                       joining: Joining(invites: invites, certificatePin: tls.pin, listening: configuration.peerListen != nil), peerSet: peerSet,
                       reconciler: reconciler, reports: reports, inbound: inbound,
                       authors: CommitAuthors(sharing: configuration.authorShare, replica: replica),
                       health: HealthChecks(heartbeat: heartbeat, readiness: readiness), metrics: metrics, audit: audit)
    let router = Router(context: LocalRequestContext.self)
    router.middlewares.add(MetricsMiddleware())
    router.middlewares.add(LocalWriteAudit(audit: audit))
    router.middlewares.add(JSONErrorMiddleware())
    api.addRoutes(to: router)
    let scrape: @Sendable () -> Response = {
        metrics.exposition(replica: replica, peers: peerSet.replicators, dataDirectory: configuration.dataDirectory)
    }
    router.get("/metrics") { _, _ in scrape() }
    WriterWedge.addRoute(to: router, replica: replica, logger: logger)
    if let listen = configuration.metricsListen {
        services.append(try makeMetricsListener(listen, scrape: scrape, onBound: { readiness.bound("metrics") }, logger: logger))
    }
    try addWebApp(api, to: router, services: &services, configuration, tls: tls, logger: logger)
    router.middlewares.add(MethodNotAllowedMiddleware(routes: router.routes))  // after every route

    // The lock proves no other daemon owns this folder, so a leftover socket is stale.
    if fm.fileExists(atPath: configuration.socketPath) { try fm.removeItem(atPath: configuration.socketPath) }
    let socketPath = configuration.socketPath
    let app = Application(
        router: router,
        server: .http1(configuration: .init(additionalChannelHandlers: [
            RecordReadFastPath { id in (try? api.recordAnswer(id)) ?? nil },
        ])),
        configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: nil),
        onServerRunning: { _ in
            chmod(socketPath, 0o660)
            logger.info("listening", metadata: ["socket": "\(socketPath)", "node": "\(me.identity.id)", "org": "\(me.org)"])
            readiness.bound("local")
        },
        logger: logger)
    services.append(app)
    services.append(MemoryTrim())
    services.append(events)
    // Last: it hears of shutdown first and tells systemd STOPPING=1 before anything drains.
    services.append(heartbeat)
    return Daemon(configuration: configuration, replica: replica, node: me, audit: audit, services: services, lock: LockBox(lock), logger: logger)
}

/// The node's TLS identity: made on first start next to the node identity.
func loadOrCreateTLS(_ configuration: DaemonConfiguration, name: String, logger: Logger) throws -> NodeTLSIdentity {
    if FileManager.default.fileExists(atPath: configuration.tlsCertificatePath) {
        return try NodeTLSIdentity.load(certificatePath: configuration.tlsCertificatePath, keyPath: configuration.tlsKeyPath)
    }
    let tls = try NodeTLSIdentity.create(commonName: name)
    try tls.write(certificatePath: configuration.tlsCertificatePath, keyPath: configuration.tlsKeyPath)
    logger.info("created TLS certificate", metadata: ["pin": "\(tls.pin)"])
    return tls
}

/// When a partner last called our peer API: a node that only receives (a hub) is not offline.
final class InboundContact: RouterMiddleware, Sendable {
    typealias Context = PeerRequestContext
    let last = Mutex<UInt64?>(nil)
    /// Partners' long polls that say how many nodes they dial, for `PairDialling`.
    let dialling: PairDialling?

    init(dialling: PairDialling? = nil) {
        self.dialling = dialling
    }

    func handle(_ request: Request, context: PeerRequestContext, next: (Request, PeerRequestContext) async throws -> Response) async throws -> Response {
        let poll = dialling == nil ? nil : try dialIn(request, context)
        if let (node, dials, since, pushed) = poll {
            dialling?.pollBegan(from: node, dials: dials, since: since, pushed: pushed, now: Replica.wallClockMilliseconds())
        }
        defer { if let (node, _, _, _) = poll { dialling?.pollEnded(from: node, now: Replica.wallClockMilliseconds()) } }
        let response = try await next(request, context)
        last.withLock { $0 = Replica.wallClockMilliseconds() }
        return response
    }

    /// A partner's long poll that names how many nodes it dials: who calls, the count, its cursor
    /// in our feed, and how far its own feed has been pushed here. Older releases send no `dials`;
    /// a malformed `dials` or `pushed` is refused (`since` and `wait` are checked by the route).
    func dialIn(_ request: Request, _ context: PeerRequestContext) throws -> (NodeID, Int, Int64, Int64)? {
        guard request.method == .get, request.uri.path == "/v1/peer/commits" else { return nil }
        let q = request.uri.queryParameters
        guard let pushed = Int64(q["pushed"].map(String.init) ?? "0"), pushed >= 0 else {
            throw APIError.badRequest("pushed must be a cursor ≥ 0")
        }
        guard let text = q["dials"].map(String.init) else { return nil }
        guard let dials = PairDialling.dials(parameter: text) else {
            throw APIError.badRequest("dials must be a count from 0 to \(PairDialling.maxDials), or all")
        }
        guard let node = context.partnerNode, let wait = q["wait"].flatMap({ Int(String($0)) }), wait > 0,
            let since = q["since"].flatMap({ Int64(String($0)) }), since >= 0
        else { return nil }
        return (node, dials, since, pushed)
    }
}

/// Whether a host names this machine's loopback interface, decided on the parsed address, never
/// on a text prefix (`127.0.0.1.evil.tld` is a DNS name). Accepted: `localhost` exactly (in any
/// case), an IPv4 address in 127.0.0.0/8 written as four decimal parts, `::1` in any IPv6 spelling
/// (also in brackets, which hold only IPv6), and the IPv4-mapped `::ffff:127.x.y.z`. Refused: shorthand and hex or octal
/// forms (`127.1`, `0x7f.0.0.1`, `0177.0.0.1`), which resolvers read differently; `localhost.` and
/// `*.localhost`, which go to DNS; scoped IPv6 (`::1%lo`).
func isLoopback(host: String) -> Bool {
    var host = host
    let bracketed = host.hasPrefix("[") && host.hasSuffix("]")
    if bracketed {
        host = String(host.dropFirst().dropLast())
    } else {
        if host.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
    }
    var v6 = in6_addr()
    guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
    let bytes = withUnsafeBytes(of: v6) { Array($0) }
    let loopback: [UInt8] = Array(repeating: 0, count: 15) + [1]
    let mappedPrefix: [UInt8] = Array(repeating: 0, count: 10) + [0xff, 0xff]
    return bytes == loopback || (Array(bytes[0..<12]) == mappedPrefix && bytes[12] == 127)
}

/// "host:port" → parts; IPv6 hosts in brackets.
func splitHostPort(_ text: String, key: String = "peers.listen") throws -> (host: String, port: Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
        throw ConfigurationError("\(key) must be host:port, not \(text)")
    }
    var host = String(text[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port)
}

/// The partners this node dials: the active nodes with an address other than itself, only those
/// `peers.connect` names when it is set. One rule at the start and after every membership change.
func partnersToDial(_ configuration: DaemonConfiguration, registry: PartnerRegistry, me: NodeID) -> [PartnerRegistry.Node] {
    registry.activeNodes.filter { node in
        node.id != me && node.address != nil
            && (configuration.peerConnect.map { $0.contains(node.id.rawValue) || node.name.map($0.contains) == true } ?? true)
    }
}

/// At the start: the partners to dial, with the TLS settings to call them. A `peers.connect`
/// name that is no callable node, or an address that cannot be used, stops the daemon.
func makePeerEndpoints(
    _ configuration: DaemonConfiguration, registry: PartnerRegistry, me: NodeFiles.StoredIdentity, logger: Logger
) throws -> [PeerEndpoint] {
    let others = registry.nodes.values.filter { $0.id != me.identity.id }.sorted { $0.id < $1.id }
    for name in configuration.peerConnect ?? [] {
        guard let node = others.first(where: { $0.name == name || $0.id.rawValue == name }) else {
            throw ConfigurationError("peers.connect names \(name), which is no other node in the registry (known: \(others.map { $0.name ?? $0.id.rawValue }.joined(separator: ", ")))")
        }
        if node.isRetired {
            logger.notice("not dialling a partner a coordinator retired", metadata: ["peer": "\(name)"])
        } else if node.address == nil {
            throw ConfigurationError("peers.connect names \(name), which has no address in the registry")
        }
    }
    return try partnersToDial(configuration, registry: registry, me: me.identity.id).compactMap { try makePeerEndpoint($0, configuration, logger: logger) }
}

/// While running: the same rule after a membership change. A partner whose address cannot be
/// used is left out with a warning, where at the start it stops the daemon.
func liveEndpoints(_ configuration: DaemonConfiguration, registry: PartnerRegistry, me: NodeFiles.StoredIdentity, logger: Logger) -> [PeerEndpoint] {
    partnersToDial(configuration, registry: registry, me: me.identity.id).compactMap { node in
        do {
            return try makePeerEndpoint(node, configuration, logger: logger)
        } catch {
            logger.warning("cannot dial a partner", metadata: ["peer": "\(node.name ?? node.id.rawValue)", "error": "\(error)"])
            return nil
        }
    }
}

/// One partner with an address: the TLS settings to call it (nil when it cannot be called).
func makePeerEndpoint(_ peer: PartnerRegistry.Node, _ configuration: DaemonConfiguration, logger: Logger) throws -> PeerEndpoint? {
    guard let address = peer.address else { return nil }
    let tls: HTTPClientConfiguration.TLS?
    if address.hasPrefix("https://") {
        guard let pin = peer.certificatePin else {
            logger.warning("peer has an https address but no certificatePin in the registry; not connecting", metadata: ["peer": "\(peer.id)"])
            return nil
        }
        tls = peerClientTLS(certificatePath: configuration.tlsCertificatePath, keyPath: configuration.tlsKeyPath, peerPin: pin)
    } else if address.hasPrefix("http://") {
        let host = String(address.dropFirst(7).prefix { $0 != "/" })
        guard configuration.peerPlainHTTP, let parts = try? splitHostPort(host), isLoopback(host: parts.host) else {
            throw ConfigurationError("peer \(peer.name ?? peer.id.rawValue) has plain http address \(address): allowed only on loopback with peers.plain-http: true")
        }
        tls = nil
    } else {
        throw ConfigurationError("peer \(peer.name ?? peer.id.rawValue): address must start with https:// (or http:// on loopback)")
    }
    return PeerEndpoint(node: peer, address: address, tls: tls)
}

/// The peer listener: mutual TLS with the registry's pins, or plain HTTP on loopback when allowed;
/// either way behind the connection, timeout and per-partner limits of `PeerListenerLimits.swift`.
func makePeerListener(
    _ listen: String, _ configuration: DaemonConfiguration, tls: NodeTLSIdentity, replica: Replica,
    me: NodeFiles.StoredIdentity, events: EventBroadcaster, inbound: InboundContact, metrics: DaemonMetrics, audit: AuditLog,
    committer: GroupCommitter, invites: InviteBook, onBound: @escaping @Sendable () -> Void, logger: Logger
) throws -> any Service {
    let (host, port) = try splitHostPort(listen)
    let limits = configuration.peerLimits
    let router = Router(context: PeerRequestContext.self)
    router.middlewares.add(LargeAnswerClosesConnection())
    router.middlewares.add(MetricsMiddleware())
    router.middlewares.add(JSONErrorMiddleware())
    router.middlewares.add(PeerProtocolMiddleware(me: "partner \(me.name ?? me.org) (\(me.org))"))
    router.middlewares.add(PartnerCertificateMiddleware())
    router.middlewares.add(PeerMembershipMiddleware(replica: replica))
    router.middlewares.add(PeerLoadMiddleware(load: PeerLoad(limits: limits)))
    router.middlewares.add(inbound)
    PeerAPI(replica: replica, node: me, events: events, limits: limits, audit: audit, logger: logger, metrics: metrics).addRoutes(to: router)
    PeerJoin(replica: replica, me: me, committer: committer, invites: invites, audit: audit, logger: logger).addRoutes(to: router)
    let address = BindAddress.hostname(host, port: port)
    let running: @Sendable (any Channel) async -> Void = { channel in
        logger.info("peer listener", metadata: ["address": "\(channel.localAddress?.description ?? listen)", "tls": "\(!configuration.peerPlainHTTP)"])
        onBound()
    }
    if configuration.peerPlainHTTP, !isLoopback(host: host) {
        throw ConfigurationError("peers.plain-http is allowed only on a loopback address, not \(host)")
    }
    let serverTLS = try configuration.peerPlainHTTP ? nil : peerServerTLSConfiguration(identity: tls, allowedPins: {
        Set(replica.registry.activeNodes.compactMap(\.certificatePin))
    }, acceptStrangers: { invites.hasOpen() }, logger: logger).withContext()
    let admission = ConnectionAdmission(maxConnections: limits.maxConnections, maxPerAddress: limits.maxConnectionsPerAddress,
                                        audit: audit, logger: logger)
    let server = HTTPServerBuilder { responder in
        PeerChildChannel(
            http: HTTP1Channel(responder: responder, configuration: .init(idleTimeout: .seconds(Int64(limits.idleTimeoutSeconds)))),
            tls: serverTLS, admission: admission, handshakeTimeout: .seconds(Int64(limits.handshakeTimeoutSeconds)), audit: audit)
    }
    return Application(router: router, server: server, configuration: .init(address: address, serverName: nil),
                       onServerRunning: running, logger: logger)
}

/// `metrics.listen`: plain HTTP serving only `GET /metrics`, for a Prometheus on this machine
/// (or, when the operator names another address, on the monitoring network).
func makeMetricsListener(
    _ listen: String, scrape: @escaping @Sendable () -> Response, onBound: @escaping @Sendable () -> Void, logger: Logger
) throws -> any Service {
    let (host, port) = try splitHostPort(listen, key: "metrics.listen")
    let router = Router()
    router.middlewares.add(JSONErrorMiddleware())
    router.get("/metrics") { _, _ in scrape() }
    return Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
                       onServerRunning: { channel in
                           logger.info("metrics listener", metadata: ["address": "\(channel.localAddress?.description ?? listen)"])
                           onBound()
                       }, logger: logger)
}
