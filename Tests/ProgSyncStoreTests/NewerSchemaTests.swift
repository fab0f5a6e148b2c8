import Foundation
import ProgSyncCore
import ProgSyncStore
import Testing

/// Commits written under a schema a node does not know yet (#13): kept, merged, relayed and
/// counted, never refused for that; judged in full when the node knows the schema.
@Suite struct NewerSchemaTests {
    /// Every commit `from` holds, as a partner would relay it: the stored bytes and signature.
    func relay(_ from: Replica, to: Replica) throws -> ApplyReport {
        let raw = try from.rawCommits(afterLSN: 0, limit: 100_000)
        return try to.apply(raw.map { try SignedCommit(canonicalBytes: $0.body, signature: $0.signature) })
    }

    /// jenv (schema 2) creates a project (a kind schema 1 lacks) and closes an action line (a
    /// field schema 1 lacks). politie, pinned to schema 1, keeps both and relays them to comensha.
    func restructured(_ net: TestNetwork) throws -> (jenv: Replica, politie: Replica, comensha: Replica) {
        let jenv = try net.replica("jenv")
        try jenv.commitLocal(author: "coordinator", writes: [
            FieldWrite(record: "al1", field: "kind", value: "action-line"), FieldWrite(record: "al1", field: "number", value: 1),
            FieldWrite(record: "al1", field: "title", value: "Preventie"), FieldWrite(record: "al1", field: "owner", value: "jenv"),
        ])
        try jenv.commitLocal(author: "coordinator", writes: [
            FieldWrite(record: "al1.p1", field: "kind", value: "project"), FieldWrite(record: "al1.p1", field: "actionLine", value: "al1"),
            FieldWrite(record: "al1.p1", field: "number", value: 1), FieldWrite(record: "al1.p1", field: "title", value: "Bewustwording"),
            FieldWrite(record: "al1.p1", field: "owner", value: "jenv"),
        ])
        try jenv.commitLocal(author: "coordinator", writes: [FieldWrite(record: "al1", field: "closed", value: "2023-06-30")])
        return (jenv, try net.replica("politie", schema: 1), try net.replica("comensha"))
    }

    @Test func anOlderNodeKeepsRelaysAndCountsCommitsOfANewerSchema() throws {
        let net = TestNetwork(nodes: [("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")])
        defer { net.cleanUp() }
        let (jenv, politie, comensha) = try restructured(net)

        let kept = try relay(jenv, to: politie)
        #expect(kept.applied == 3 && kept.rejected.isEmpty && kept.held.isEmpty && kept.newerSchema == 2, "\(kept)")
        let waiting = try politie.newerSchemaCommits()
        #expect(waiting.map(\.schema) == [ProgrammeSchema.current, ProgrammeSchema.current])
        #expect(waiting.flatMap(\.gaps).contains("record al1: field closed"), "\(waiting)")
        #expect(waiting.flatMap(\.gaps).contains { $0.hasPrefix("record al1.p1: kind") }, "\(waiting)")
        #expect(try ReplicaSnapshot(politie) == ReplicaSnapshot(jenv), "the older node's digest counts what it cannot judge yet")

        // Relayed by the older node, the signatures still verify: comensha applies all of it.
        let relayed = try relay(politie, to: comensha)
        #expect(relayed.applied == 3 && relayed.rejected.isEmpty && relayed.newerSchema == 0, "\(relayed)")
        #expect(try ReplicaSnapshot(comensha) == ReplicaSnapshot(jenv))

        // politie cannot write what schema 1 lacks, but goes on writing what it knows.
        #expect(throws: ReplicaError.self) {
            try politie.commitLocal(author: "p", writes: [FieldWrite(record: "x1", field: "closed", value: "2023-01-01")])
        }

        // The upgrade: the same file opened by a build that knows schema 2. Nothing waits any more.
        try politie.close()
        let upgraded = try net.replica("politie")
        #expect(try upgraded.newerSchemaCommits().isEmpty)
        #expect(try upgraded.rejectedCommits().isEmpty)
        #expect(try ReplicaSnapshot(upgraded) == ReplicaSnapshot(jenv))
    }

    /// A commit that names schema 1 but uses a schema-2 field can never become valid: refused on
    /// every node, whatever its schema.
    @Test func aCommitIsJudgedByTheSchemaItNames() throws {
        let net = TestNetwork(nodes: [("jenv", "jenv"), ("politie", "politie")])
        defer { net.cleanUp() }
        let identity = try #require(net.identities["jenv"])
        let commit = Commit(origin: identity.id, seq: 1, stamp: Stamp(milliseconds: net.clock.now, counter: 0), schema: 1, author: "x",
                            prev: [], changes: [Change(record: "al1", field: "closed", value: "2023-06-30")])
        let signed = try SignedCommit.sign(commit, with: identity)
        for schema in [UInt32(1), 2] {
            let replica = try net.replica("politie", inMemory: true, schema: schema)
            let report = try replica.apply([signed])
            #expect(report.rejected.map(\.reason) == [.invalid], "schema \(schema): \(report)")
        }
    }

    /// A forged commit that names schema 2 with a value schema 2 refuses: the schema-1 node keeps
    /// it (it cannot tell), and once upgraded refuses it and rebuilds the record without it, so it
    /// ends where a schema-2 node was all along.
    @Test func aKeptCommitThatTheNewerSchemaRefusesIsUndoneOnUpgrade() throws {
        let net = TestNetwork(nodes: [("jenv", "jenv"), ("politie", "politie"), ("comensha", "comensha")])
        defer { net.cleanUp() }
        let jenv = try net.replica("jenv")
        try jenv.commitLocal(author: "coordinator", writes: [
            FieldWrite(record: "al1", field: "kind", value: "action-line"), FieldWrite(record: "al1", field: "number", value: 1),
            FieldWrite(record: "al1", field: "title", value: "Preventie"), FieldWrite(record: "al1", field: "owner", value: "jenv"),
        ])
        let head = try #require(try jenv.rawCommits(afterLSN: 0, limit: 10).last)
        let first = try SignedCommit(canonicalBytes: head.body, signature: head.signature)
        let identity = try #require(net.identities["jenv"])
        let titleRef = CommitRef(origin: identity.id, seq: 1)
        let forged = Commit(origin: identity.id, seq: 2, stamp: Stamp(milliseconds: net.clock.now + 10, counter: 0), schema: 2, author: "x",
                            prev: first.hash, changes: [
                                Change(record: "al1", field: "closed", value: "gisteren"),
                                Change(record: "al1", field: "title", value: "Vervalst", supersedes: [titleRef]),
                            ])
        let bad = try SignedCommit.sign(forged, with: identity)

        let newer = try net.replica("comensha")
        let refused = try newer.apply([first, bad])
        #expect(refused.applied == 1 && refused.rejected.map(\.reason) == [.invalid], "\(refused)")

        let older = try net.replica("politie", schema: 1)
        let kept = try older.apply([first, bad])
        #expect(kept.applied == 2 && kept.newerSchema == 1, "\(kept)")
        #expect(try older.fields(ofRecord: "al1")["title"]?.value == "Vervalst")
        try older.close()

        let upgraded = try net.replica("politie")
        #expect(try upgraded.newerSchemaCommits().isEmpty)
        #expect(try upgraded.rejectedCommits().map(\.reason) == [.invalid])
        #expect(try ReplicaSnapshot(upgraded) == ReplicaSnapshot(newer), "upgraded node ends where the schema-2 node was")
    }
}
