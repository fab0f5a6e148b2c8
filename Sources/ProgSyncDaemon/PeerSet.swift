import Logging
import ProgSyncCore
import ProgSyncStore
import ServiceLifecycle
import Synchronization

/// The partners this node dials, following the partnership as it changes (#12): a node a
/// coordinator admits with an address gets its replicator within a second of the admission
/// being merged, without a restart; a retired node's replicator stops by itself
/// (`PeerReplicator.watchRetirement`) and stays listed as `retired`. The local API, the metrics,
/// the web app and the reconciler all read this one list.
final class PeerSet: Service, Sendable {
    struct Member: Sendable {
        let endpoint: PeerEndpoint
        let replicator: PeerReplicator
    }

    private let members: Mutex<[Member]>
    /// The endpoints the registry in force gives (nil: a fixed set, as in tests).
    private let endpoints: (@Sendable (PartnerRegistry) -> [PeerEndpoint])?
    private let make: (@Sendable (PeerEndpoint) throws -> PeerReplicator)?
    private let replica: Replica?
    private let logger: Logger?

    /// An empty, fixed set (no daemon around it).
    init() {
        members = Mutex([])
        endpoints = nil
        make = nil
        replica = nil
        logger = nil
    }

    init(initial: [PeerEndpoint], replica: Replica, logger: Logger,
         endpoints: @escaping @Sendable (PartnerRegistry) -> [PeerEndpoint],
         make: @escaping @Sendable (PeerEndpoint) throws -> PeerReplicator) throws {
        members = Mutex(try initial.map { Member(endpoint: $0, replicator: try make($0)) })
        self.endpoints = endpoints
        self.make = make
        self.replica = replica
        self.logger = logger
    }

    var replicators: [PeerReplicator] { members.withLock { $0.map(\.replicator) } }
    /// The partners to reconcile with: those not retired.
    var activeEndpoints: [PeerEndpoint] {
        members.withLock { $0.filter { !$0.replicator.isRetired }.map(\.endpoint) }
    }

    func run() async throws {
        await withDiscardingTaskGroup { group in
            for replicator in replicators { group.addTask { try? await replicator.run() } }
            guard let replica, let endpoints, let make else { return }
            func dialable(_ registry: PartnerRegistry) -> Set<String> {
                Set(registry.activeNodes.compactMap { node in node.address.map { node.id.rawValue + " " + $0 } })
            }
            var seen = dialable(replica.registry)
            while (try? await cancelWhenGracefulShutdown({ try await Task.sleep(for: .seconds(1)) })) != nil {
                let registry = replica.registry
                let now = dialable(registry)
                guard now != seen else { continue }
                seen = now
                let known = Set(members.withLock { $0.map(\.endpoint.node.id) })
                for endpoint in endpoints(registry) where !known.contains(endpoint.node.id) {
                    do {
                        let replicator = try make(endpoint)
                        members.withLock { $0.append(Member(endpoint: endpoint, replicator: replicator)) }
                        logger?.notice("partner admitted by a coordinator: replicating with it", metadata: [
                            "peer": "\(endpoint.node.name ?? endpoint.node.id.rawValue)", "address": "\(endpoint.address)"])
                        group.addTask { try? await replicator.run() }
                    } catch {
                        logger?.warning("cannot replicate with a newly admitted partner", metadata: [
                            "peer": "\(endpoint.node.id)", "error": "\(error)"])
                    }
                }
            }
        }
    }
}
