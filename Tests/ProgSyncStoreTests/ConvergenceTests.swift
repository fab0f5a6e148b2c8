import Foundation
import ProgSyncCore
import ProgSyncStore
import Testing

/// Random commits from 3–5 origins, delivered to fresh replicas in random orders with duplicates
/// and batches, must leave identical winners, conflict sets and digests. Replay one case with
/// PROGSYNC_SEED=<seed> PROGSYNC_PROPERTY_CASES=1.
@Suite struct ConvergenceTests {
    static let cases = Int(ProcessInfo.processInfo.environment["PROGSYNC_PROPERTY_CASES"] ?? "") ?? 2000
    static let baseSeed = UInt64(ProcessInfo.processInfo.environment["PROGSYNC_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64(UInt32.max))

    static let nodes: [(name: String, org: String)] = [
        ("n0", "jenv"), ("n1", "om"), ("n2", "politie"), ("n3", "politie"), ("n4", "comensha"),
    ]
    static let records = ["r0", "r1", "r2", "r3"]
    static let owners = ["r0": "politie", "r1": "politie", "r2": "comensha", "r3": "jenv"]
    static let fields = ["status", "title", "explanation", "deleted"]

    @Test func randomHistoriesConvergeInAnyDeliveryOrder() throws {
        var stats = (conflicts: 0, held: 0, commits: 0, refused: 0, withheld: 0)
        for i in 0..<Self.cases {
            let seed = Self.baseSeed &+ UInt64(i)
            let result = try Self.runCase(seed: seed)
            stats.conflicts += result.conflicts
            stats.held += result.held
            stats.commits += result.commits
            stats.refused += result.refused
            stats.withheld += result.withheld
            if !result.ok {
                Issue.record("convergence failed; replay with PROGSYNC_SEED=\(seed) PROGSYNC_PROPERTY_CASES=1: \(result.why)")
                return
            }
        }
        // The generator must actually produce the hard cases, or the test proves little.
        #expect(stats.conflicts > Self.cases / 10, "too few conflicts generated: \(stats)")
        #expect(stats.held > Self.cases / 10, "too few out-of-order deliveries: \(stats)")
        #expect(stats.refused > Self.cases / 10, "too few hostile commits generated: \(stats)")
        #expect(stats.withheld > Self.cases / 20, "too few commits withheld by a retirement: \(stats)")
        print("convergence: \(Self.cases) cases from seed \(Self.baseSeed), \(stats.commits) commits, \(stats.conflicts) conflicted fields, \(stats.held) commits held on the way, \(stats.refused) hostile commits refused, \(stats.withheld) withheld by a retirement")
    }

    struct CaseResult {
        var ok = true
        var why = ""
        var conflicts = 0
        var held = 0
        var commits = 0
        var refused = 0
        var withheld = 0
    }

    static func value(for field: String, _ rng: inout SeededRandom) -> JSONValue {
        switch field {
        case "status": return .string(ProgrammeStatus.allCases.randomElement(using: &rng)!.rawValue)
        case "deleted": return .bool(Bool.random(using: &rng))
        default: return .string(["a", "b", "c", "d", "Één ✓"].randomElement(using: &rng)!)
        }
    }

    /// A misbehaving partner (org `inspectie`, owner of r4 only) signing commits by hand, each
    /// with the verdict the ownership rule must give on every node.
    struct Mallory {
        let identity = NodeIdentity()
        var head: SignedCommit?
        var commits: [SignedCommit] = []
        var refused = Set<CommitRef>()

        mutating func sign(_ changes: [Change], ownerRefs: [String: CommitRef] = [:], stamp: Stamp, refuse: Bool) throws {
            let commit = Commit(
                origin: identity.id, seq: (head?.commit.seq ?? 0) + 1, stamp: stamp, author: "mallory",
                prev: head?.hash ?? [], ownerRefs: ownerRefs, changes: changes)
            let signed = try SignedCommit.sign(commit, with: identity)
            head = signed
            commits.append(signed)
            if refuse { refused.insert(signed.ref) }
        }
    }

    static func runCase(seed: UInt64) throws -> CaseResult {
        var rng = SeededRandom(seed: seed)
        let originCount = Int.random(in: 3...5, using: &rng)
        var mallory = Mallory()
        var network = TestNetwork(nodes: Array(nodes.prefix(originCount)), coordinators: ["jenv", "om"])
        network.registry.add(PartnerRegistry.Node(org: "inspectie", publicKey: mallory.identity.publicKey, name: "mallory"))
        defer { network.cleanUp() }
        // One generator may run with its clock ahead of the guard: its commits are held on every
        // other node until an operator releases them.
        let aheadNode = Double.random(in: 0..<1, using: &rng) < 0.2 ? Int.random(in: 1..<originCount, using: &rng) : nil
        func open(_ i: Int) throws -> Replica {
            try network.replica(nodes[i].name, inMemory: i != 1, clockOffset: i == aheadNode ? 10 * 60 * 1000 : 0)
        }
        var generators = try (0..<originCount).map(open)
        let orgOf = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, $0.org) })
        let allRecords = records + ["r4"]

        // The coordinator creates the shared records; everyone starts from them.
        let setup = try generators[0].commitLocal(author: "setup", writes: allRecords.flatMap { r in
            [FieldWrite(record: r, field: "kind", value: "activity"), FieldWrite(record: r, field: "owner", value: .string(owners[r] ?? "inspectie")),
             FieldWrite(record: r, field: "title", value: "t")]
        })
        for g in generators.dropFirst() { try g.apply([setup]); try releaseClockAhead(g) }
        // Mallory's first commit edits its own r4 over the setup: its chain has seen every owner.
        try mallory.sign([Change(record: "r4", field: "title", value: "m", supersedes: [setup.ref])], ownerRefs: ["r4": setup.ref],
                         stamp: Stamp(milliseconds: network.clock.now, counter: 1), refuse: false)

        // A node outside the registry (#12): its commits wait until the coordinator admits it, and
        // a retirement may withhold those beyond a seq, whatever order they were delivered in.
        var newcomer = try Newcomer(network: network)

        var created = 0
        for _ in 0..<Int.random(in: 6...24, using: &rng) {
            network.clock.advance(UInt64.random(in: 0...3, using: &rng))
            if Double.random(in: 0..<1, using: &rng) < 0.25 {
                try newcomer.move(coordinator: generators[0], &rng)
                continue
            }
            let i = Int.random(in: 0..<originCount, using: &rng)
            let node = generators[i]
            let roll = Double.random(in: 0..<1, using: &rng)
            if roll < 0.25 {
                let other = generators[Int.random(in: 0..<originCount, using: &rng)]
                try node.apply(try allCommits(other))
                try releaseClockAhead(node)
                continue
            }
            if roll < 0.33 {
                try mallorysMove(&mallory, generators[0], setup: setup, now: network.clock.now, &rng)
                continue
            }
            if roll < 0.36, i == 1 {
                // A generator restarts mid-history (on disk): its chain, clock and pasts persist.
                try generators[1].close()
                generators[1] = try open(1)
                continue
            }
            let org = orgOf[nodes[i].name]!
            let isCoordinator = ["jenv", "om"].contains(org)
            if isCoordinator, roll < 0.42 {
                // The coordinator moves a record between organisations, racing with their edits.
                let r = records.randomElement(using: &rng)!
                let to = ["politie", "comensha", "jenv"].randomElement(using: &rng)!
                try node.commitLocal(author: "u\(i)", writes: [FieldWrite(record: r, field: "owner", value: .string(to))])
                continue
            }
            if Double.random(in: 0..<1, using: &rng) < 0.1 {
                created += 1
                try node.commitLocal(author: "u\(i)", writes: [
                    FieldWrite(record: "x\(i).\(created)", field: "owner", value: .string(org)),
                    FieldWrite(record: "x\(i).\(created)", field: "title", value: value(for: "title", &rng)),
                ])
                continue
            }
            var writes: [FieldWrite] = []
            var used = Set<String>()
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let r = records.randomElement(using: &rng)!
                let f = fields.randomElement(using: &rng)!
                if used.insert(r + f).inserted { writes.append(FieldWrite(record: r, field: f, value: value(for: f, &rng))) }
            }
            let resolving = Double.random(in: 0..<1, using: &rng) < 0.15
            do {
                try node.commitLocal(author: "u\(i)", writes: writes, resolving: resolving)
            } catch let error as ReplicaError where error.code == .forbidden {
                continue  // not this org's record (any more): the local rule refused it, as partners would
            }
        }

        if !newcomer.admitted { try newcomer.admit(by: generators[0]) }
        // Everything any origin made, then delivered to observers in random orders.
        var everything: [SignedCommit] = mallory.commits + (try newcomer.ownCommits())
        let refused = mallory.refused.union(try newcomer.withheld())
        for (i, g) in generators.enumerated() {
            everything += try allCommits(g).filter { $0.commit.origin == network.identities[nodes[i].name]!.id }
        }
        var result = CaseResult()
        result.commits = everything.count
        let reference = expectedState(everything, refused: refused)
        var snapshots: [ReplicaSnapshot] = []
        for o in 0..<3 {
            var delivery = everything
            for _ in 0..<(everything.count / 5) { delivery.append(everything.randomElement(using: &rng)!) }
            delivery.shuffle(using: &rng)
            let onDisk = o == 2 && Double.random(in: 0..<1, using: &rng) < 0.2
            var observer = try network.replica("obs\(o)", inMemory: !onDisk)
            var index = 0
            var reopened = false
            while index < delivery.count {
                let n = Int.random(in: 1...8, using: &rng)
                let batch = Array(delivery[index..<min(index + n, delivery.count)])
                index += n
                let report = try observer.apply(batch)
                result.held += report.held.count
                if onDisk, !reopened, index > delivery.count / 2 {
                    try observer.close()
                    observer = try network.replica("obs\(o)")
                    reopened = true
                }
            }
            try releaseClockAhead(observer)
            let held = try observer.heldCommits()
            if !held.isEmpty {
                result.ok = false
                result.why = "observer \(o) still holds \(held.map { "\($0.ref) \($0.reason)" })"
                return result
            }
            let rejected = Set(try observer.rejectedCommits().map(\.ref))
            if rejected != refused {
                result.ok = false
                result.why = "observer \(o) refused \(rejected.sorted()), expected \(refused.sorted()): \(try observer.rejectedCommits().map(\.detail))"
                return result
            }
            if try observer.recomputeDigestBuckets() != observer.digestBuckets {
                result.ok = false
                result.why = "observer \(o): maintained digest differs from a recomputation"
                return result
            }
            let snapshot = try ReplicaSnapshot(observer)
            let conflicts = Set(snapshot.conflicts.flatMap { c in c.losers.map { conflictKey(c.record, c.field, c.winner, $0) } })
            if snapshot.winners != reference.winners || conflicts != reference.conflicts {
                result.ok = false
                result.why = "observer \(o) differs from the reference model (winners equal: \(snapshot.winners == reference.winners))"
                return result
            }
            snapshots.append(snapshot)
        }
        // A generator that catches up with everyone holds the same state too.
        try generators[0].apply(everything)
        try releaseClockAhead(generators[0])
        snapshots.append(try ReplicaSnapshot(generators[0]))
        for (k, s) in snapshots.enumerated().dropFirst() where s != snapshots[0] {
            result.ok = false
            result.why = "replica \(k) differs from replica 0 (winners equal: \(s.winners == snapshots[0].winners), conflicts equal: \(s.conflicts == snapshots[0].conflicts))"
            return result
        }
        result.conflicts = snapshots[0].conflicts.count
        result.refused = mallory.refused.count
        result.withheld = refused.count - mallory.refused.count
        return result
    }

    /// A node of comensha that no registry lists: it creates and edits its own records; the
    /// coordinator admits it, may edit its records, and may retire it after some seq.
    struct Newcomer {
        let identity = NodeIdentity()
        let replica: Replica
        var records: [String] = []
        var admitted = false
        var retiredAfter: UInt64?
        var record: String { Membership.recordID(node: identity.id) }

        init(network: TestNetwork) throws {
            var registry = network.registry
            registry.add(PartnerRegistry.Node(org: "comensha", publicKey: identity.publicKey, name: "newcomer"))
            let clock = network.clock
            replica = try Replica(configuration: ReplicaConfiguration(
                path: ":memory:", identity: identity, org: "comensha", registry: registry, now: { clock.now }))
        }

        func ownCommits() throws -> [SignedCommit] { try allCommits(replica).filter { $0.commit.origin == identity.id } }
        func withheld() throws -> Set<CommitRef> {
            guard let after = retiredAfter else { return [] }
            return Set(try ownCommits().map(\.ref).filter { $0.seq > after })
        }

        mutating func admit(by coordinator: Replica) throws {
            try coordinator.commitLocal(author: "coordinator", writes: [
                FieldWrite(record: record, field: "kind", value: "node"), FieldWrite(record: record, field: "org", value: "comensha"),
                FieldWrite(record: record, field: "publicKey", value: .string(identity.publicKeyBase64)),
            ])
            admitted = true
        }

        mutating func move(coordinator: Replica, _ rng: inout SeededRandom) throws {
            let roll = Double.random(in: 0..<1, using: &rng)
            switch roll {
            case ..<0.3 where !admitted:
                try admit(by: coordinator)
            case ..<0.5 where admitted && retiredAfter == nil:
                let cut = UInt64.random(in: 0...(replica.versionVector[identity.id] ?? 0), using: &rng)
                try coordinator.commitLocal(author: "coordinator", writes: [FieldWrite(record: record, field: "retiredAfter", value: .int(Int64(cut)))])
                retiredAfter = cut
            case ..<0.65 where !records.isEmpty:
                // The coordinator edits a record of the newcomer's that it holds.
                try coordinator.apply(try ownCommits())
                let target = records.randomElement(using: &rng)!
                if try !coordinator.fields(ofRecord: target).isEmpty {
                    try coordinator.commitLocal(author: "coordinator", writes: [FieldWrite(record: target, field: "title", value: value(for: "title", &rng))])
                }
            default:
                if records.isEmpty || Bool.random(using: &rng) {
                    let target = "nc\(records.count)"
                    records.append(target)
                    try replica.commitLocal(author: "nc", writes: [
                        FieldWrite(record: target, field: "owner", value: "comensha"), FieldWrite(record: target, field: "title", value: "n"),
                    ])
                } else {
                    try replica.commitLocal(author: "nc", writes: [
                        FieldWrite(record: records.randomElement(using: &rng)!, field: "title", value: value(for: "title", &rng)),
                    ])
                }
            }
        }
    }

    /// An operator releases what waits for its clock (and what waits behind it).
    static func releaseClockAhead(_ replica: Replica) throws {
        while let ahead = try replica.heldCommits().first(where: { $0.reason == .clockAhead }) {
            try replica.releaseHeld(hash: ahead.hash)
        }
    }

    /// One hostile commit, or an honest one on its own r4. Mallory reads the coordinator's view
    /// to name current versions, as a partner that syncs would.
    static func mallorysMove(_ mallory: inout Mallory, _ coordinator: Replica, setup: SignedCommit, now: UInt64, _ rng: inout SeededRandom) throws {
        let target = records.randomElement(using: &rng)!
        let stamp = Stamp(milliseconds: now, counter: UInt16(mallory.commits.count + 1))
        let title = try coordinator.fields(ofRecord: target)["title"]?.version.ref
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:  // takeover, replacing the current title
            try mallory.sign([
                Change(record: target, field: "owner", value: "inspectie"),
                Change(record: target, field: "title", value: "taken", supersedes: title.map { [$0] } ?? []),
            ], stamp: stamp, refuse: true)
        case 1:  // stale owner reference: the setup made another org the owner
            try mallory.sign([Change(record: target, field: "status", value: "completed")], ownerRefs: [target: setup.ref],
                             stamp: stamp, refuse: true)
        case 2:  // a blind claim, naming nothing
            try mallory.sign([Change(record: target, field: "owner", value: "inspectie")], stamp: stamp, refuse: true)
        default:  // an honest edit of its own record
            try mallory.sign([Change(record: "r4", field: "status", value: "on-track")], ownerRefs: ["r4": setup.ref],
                             stamp: stamp, refuse: false)
        }
    }

    static func conflictKey(_ record: String, _ field: String, _ winner: FieldVersion, _ loser: FieldVersion) -> String {
        "\(record).\(field): \(winner.ref) over \(loser.ref)"
    }

    /// The reference model: the merge rule applied to the accepted commits' changes directly. A
    /// field's versions are those nobody superseded; the greatest (stamp, origin) wins.
    static func expectedState(_ commits: [SignedCommit], refused: Set<CommitRef>) -> (winners: [String: [String: FieldVersion]], conflicts: Set<String>) {
        struct Key: Hashable { let record: String; let field: String }
        var versions: [Key: [FieldVersion]] = [:]
        var superseded: [Key: Set<CommitRef>] = [:]
        for c in commits where !refused.contains(c.ref) {
            for change in c.commit.changes {
                let key = Key(record: change.record, field: change.field)
                versions[key, default: []].append(FieldVersion(value: change.valueBytes, stamp: c.commit.stamp, origin: c.commit.origin, seq: c.commit.seq))
                superseded[key, default: []].formUnion(change.supersedes)
            }
        }
        var winners: [String: [String: FieldVersion]] = [:]
        var conflicts = Set<String>()
        for (key, all) in versions {
            let frontier = all.filter { !(superseded[key] ?? []).contains($0.ref) }.sorted { FieldVersion.wins($0, over: $1) }
            guard let winner = frontier.first else { continue }
            winners[key.record, default: [:]][key.field] = winner
            for loser in frontier.dropFirst() { conflicts.insert(conflictKey(key.record, key.field, winner, loser)) }
        }
        return (winners, conflicts)
    }
}
