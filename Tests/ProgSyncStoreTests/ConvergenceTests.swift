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
        var stats = (conflicts: 0, held: 0, commits: 0)
        for i in 0..<Self.cases {
            let seed = Self.baseSeed &+ UInt64(i)
            let result = try Self.runCase(seed: seed)
            stats.conflicts += result.conflicts
            stats.held += result.held
            stats.commits += result.commits
            if !result.ok {
                Issue.record("convergence failed; replay with PROGSYNC_SEED=\(seed) PROGSYNC_PROPERTY_CASES=1: \(result.why)")
                return
            }
        }
        // The generator must actually produce the hard cases, or the test proves little.
        #expect(stats.conflicts > Self.cases / 10, "too few conflicts generated: \(stats)")
        #expect(stats.held > Self.cases / 10, "too few out-of-order deliveries: \(stats)")
        print("convergence: \(Self.cases) cases from seed \(Self.baseSeed), \(stats.commits) commits, \(stats.conflicts) conflicted fields, \(stats.held) commits held on the way")
    }

    struct CaseResult {
        var ok = true
        var why = ""
        var conflicts = 0
        var held = 0
        var commits = 0
    }

    static func value(for field: String, _ rng: inout SeededRandom) -> JSONValue {
        switch field {
        case "status": return .string(ProgrammeStatus.allCases.randomElement(using: &rng)!.rawValue)
        case "deleted": return .bool(Bool.random(using: &rng))
        default: return .string(["a", "b", "c", "d", "Één ✓"].randomElement(using: &rng)!)
        }
    }

    static func runCase(seed: UInt64) throws -> CaseResult {
        var rng = SeededRandom(seed: seed)
        let originCount = Int.random(in: 3...5, using: &rng)
        let network = TestNetwork(nodes: Array(nodes.prefix(originCount)), coordinators: ["jenv", "om"])
        defer { network.cleanUp() }
        let generators = try nodes.prefix(originCount).map { try network.replica($0.name, inMemory: true) }
        let orgOf = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, $0.org) })

        // The coordinator creates the shared records; everyone starts from them.
        _ = try generators[0].commitLocal(author: "setup", writes: records.flatMap { r in
            [FieldWrite(record: r, field: "kind", value: "activity"), FieldWrite(record: r, field: "owner", value: .string(owners[r]!))]
        })
        let setup = try allCommits(generators[0])
        for g in generators.dropFirst() { try g.apply(setup) }

        var created = 0
        for _ in 0..<Int.random(in: 6...24, using: &rng) {
            network.clock.advance(UInt64.random(in: 0...3, using: &rng))
            let i = Int.random(in: 0..<originCount, using: &rng)
            let node = generators[i]
            if Double.random(in: 0..<1, using: &rng) < 0.3 {
                let other = generators[Int.random(in: 0..<originCount, using: &rng)]
                try node.apply(try allCommits(other))
                continue
            }
            let org = orgOf[nodes[i].name]!
            let editable = ["jenv", "om"].contains(org) ? records : records.filter { owners[$0] == org }
            if editable.isEmpty || Double.random(in: 0..<1, using: &rng) < 0.1 {
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
                let r = editable.randomElement(using: &rng)!
                let f = fields.randomElement(using: &rng)!
                if used.insert(r + f).inserted { writes.append(FieldWrite(record: r, field: f, value: value(for: f, &rng))) }
            }
            let resolving = Double.random(in: 0..<1, using: &rng) < 0.15
            try node.commitLocal(author: "u\(i)", writes: writes, resolving: resolving)
        }

        // Everything any origin made, then delivered to observers in random orders.
        var everything: [SignedCommit] = []
        for (i, g) in generators.enumerated() {
            everything += try allCommits(g).filter { $0.commit.origin == network.identities[nodes[i].name]!.id }
        }
        var result = CaseResult()
        result.commits = everything.count
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
            let held = try observer.heldCommits()
            if !held.isEmpty {
                result.ok = false
                result.why = "observer \(o) still holds \(held.map { "\($0.ref) \($0.reason)" })"
                return result
            }
            let rejected = try observer.rejectedCommits()
            if !rejected.isEmpty {
                result.ok = false
                result.why = "observer \(o) rejected \(rejected.map { "\($0.ref) \($0.reason) \($0.detail)" })"
                return result
            }
            if try observer.recomputeDigestBuckets() != observer.digestBuckets {
                result.ok = false
                result.why = "observer \(o): maintained digest differs from a recomputation"
                return result
            }
            snapshots.append(try ReplicaSnapshot(observer))
        }
        // A generator that catches up with everyone holds the same state too.
        try generators[0].apply(everything)
        snapshots.append(try ReplicaSnapshot(generators[0]))
        for (k, s) in snapshots.enumerated().dropFirst() where s != snapshots[0] {
            result.ok = false
            result.why = "replica \(k) differs from replica 0 (winners equal: \(s.winners == snapshots[0].winners), conflicts equal: \(s.conflicts == snapshots[0].conflicts))"
            return result
        }
        result.conflicts = snapshots[0].conflicts.count
        return result
    }
}
