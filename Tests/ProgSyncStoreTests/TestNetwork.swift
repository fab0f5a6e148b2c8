import Foundation
import ProgSyncCore
import ProgSyncStore

/// A deterministic random generator (SplitMix64), so a failing case can be replayed by its seed.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A settable clock shared by the nodes of one test.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var ms: UInt64
    init(_ ms: UInt64 = 1_800_000_000_000) { self.ms = ms }
    var now: UInt64 {
        lock.lock(); defer { lock.unlock() }
        return ms
    }
    func advance(_ delta: UInt64) {
        lock.lock(); defer { lock.unlock() }
        ms += delta
    }
}

/// A registry of test nodes: `jenv` coordinates, the others own what they create.
struct TestNetwork {
    var identities: [String: NodeIdentity] = [:]  // by node name
    var orgs: [String: String] = [:]  // node name → org
    var registry: PartnerRegistry
    let clock: TestClock
    let folder: URL

    init(nodes: [(name: String, org: String)], coordinators: Set<String> = ["jenv"], clock: TestClock = TestClock()) {
        var registryNodes: [PartnerRegistry.Node] = []
        for (name, org) in nodes {
            let identity = NodeIdentity()
            identities[name] = identity
            orgs[name] = org
            registryNodes.append(PartnerRegistry.Node(org: org, publicKey: identity.publicKey, name: name))
        }
        registry = PartnerRegistry(nodes: registryNodes, coordinators: coordinators)
        self.clock = clock
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-test-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { folder.appendingPathComponent("\(name).sqlite").path }

    /// Opens the replica of a registered node, or of an observer that writes nothing.
    func replica(
        _ name: String, inMemory: Bool = false, clockOffset: Int64 = 0, limits: ReplicaConfiguration.Limits = .init(),
        schema: UInt32 = ProgrammeSchema.current
    ) throws -> Replica {
        let identity = identities[name] ?? NodeIdentity()
        let clock = self.clock
        return try Replica(configuration: ReplicaConfiguration(
            path: inMemory ? ":memory:" : path(name), identity: identity, org: orgs[name] ?? "observer",
            registry: registry,
            now: { UInt64(Int64(clock.now) + clockOffset) }, limits: limits, schemaVersion: schema))
    }

    func cleanUp() { try? FileManager.default.removeItem(at: folder) }
}

/// What two replicas must agree on.
struct ReplicaSnapshot: Equatable {
    var winners: [String: [String: FieldVersion]]
    var conflicts: [ConflictEntry]
    var root: [UInt8]

    init(_ replica: Replica) throws {
        winners = try replica.allWinners()
        conflicts = try replica.conflicts()
        root = replica.digestRoot
    }
}

func allCommits(_ replica: Replica) throws -> [SignedCommit] {
    try replica.commits(afterLSN: 0, limit: 1_000_000).map(\.commit)
}
