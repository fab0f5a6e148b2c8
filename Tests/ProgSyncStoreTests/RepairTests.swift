import Foundation
import GRDB
import ProgSyncCore
import ProgSyncStore
import Testing

/// The self-check and repair behind nightly reconciliation: a replica changed behind the
/// daemon's back is found by its digest and rebuilt from its signed commit log; a commit
/// deleted from the log is found by its heads and restored from a partner.
@Suite struct RepairTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie"), ("com", "comensha")])

    /// Three nodes write concurrently, with conflicts; the coordinator ends up holding everything.
    func populated(seed: UInt64 = 7) throws -> (coord: Replica, others: [Replica]) {
        var random = SeededRandom(seed: seed)
        let coord = try network.replica("coord")
        let pol = try network.replica("pol", inMemory: true)
        let com = try network.replica("com", inMemory: true)
        var records: [String] = []
        for i in 0..<40 {
            let owner = i % 2 == 0 ? "politie" : "comensha"
            let id = "rec.\(i)"
            records.append(id)
            try coord.commitLocal(author: "c", writes: [
                FieldWrite(record: id, field: "kind", value: "activity"), FieldWrite(record: id, field: "owner", value: .string(owner)),
                FieldWrite(record: id, field: "status", value: "on-track"),
            ])
        }
        let base = try allCommits(coord)
        try pol.apply(base)
        try com.apply(base)
        for round in 0..<5 {
            for (replica, owner) in [(coord, "jenv"), (pol, "politie"), (com, "comensha")] {
                for _ in 0..<10 {
                    let i = Int(random.next() % 40)
                    guard owner == "jenv" || (i % 2 == 0) == (owner == "politie") else { continue }
                    let field = ["status", "explanation"][Int(random.next() % 2)]
                    let value: JSONValue = field == "status" ? ["delayed", "completed", "on-track"][Int(random.next() % 3)] : .string("\(owner) r\(round)")
                    try replica.commitLocal(author: owner, writes: [FieldWrite(record: records[i], field: field, value: value)])
                }
                network.clock.advance(3)
            }
            // Partial exchange each round, so some edits are concurrent and some are not.
            try pol.apply(try allCommits(coord))
            try coord.apply(try allCommits(com))
        }
        for r in [pol, com] { try coord.apply(try allCommits(r)) }
        for r in [pol, com] { try r.apply(try allCommits(coord)) }
        return (coord, [pol, com])
    }

    func tamper(_ replica: Replica, _ sql: String) throws {
        let queue = try DatabaseQueue(path: network.path("coord"))
        try queue.write { db in try db.execute(sql: sql) }
        try queue.close()
    }

    @Test func healthyReplicaIsCleanAndRebuildChangesNothing() throws {
        defer { network.cleanUp() }
        let (coord, others) = try populated()
        #expect(try coord.conflicts().count > 0, "the scenario should produce conflicts")
        let integrity = try coord.checkIntegrity()
        #expect(integrity.isClean)
        #expect(integrity.fieldsChecked == (try coord.counts().fields))
        let before = try ReplicaSnapshot(coord)
        // Rebuilding every bucket from the log computes the same frontiers as incremental merging.
        let rebuilt = try coord.rebuild(buckets: Set(0..<ReplicaDigest.bucketCount))
        #expect(rebuilt.fieldsRepaired == 0 && rebuilt.conflictsRepaired == 0)
        #expect(rebuilt.records == 40)
        #expect(try ReplicaSnapshot(coord) == before)
        for other in others { #expect(try ReplicaSnapshot(other) == before) }
    }

    @Test func changedWinnerAndDeletedLoserAreFoundAndRebuilt() throws {
        defer { network.cleanUp() }
        let (coord, others) = try populated()
        let truth = try ReplicaSnapshot(others[0])
        let conflict = try #require(try coord.conflicts().first)
        try coord.close()
        try tamper(coord, """
            UPDATE fields SET value = '"forged"' WHERE record = 'rec.3' AND field = 'status';
            DELETE FROM conflicts WHERE record = '\(conflict.record)' AND field = '\(conflict.field)';
            INSERT INTO fields (record, field, value, stamp, origin, seq) VALUES ('planted', 'status', '"completed"', 1, 'x', 1);
            """)
        let reopened = try network.replica("coord")
        let integrity = try reopened.checkIntegrity()
        #expect(integrity.divergedBuckets.count >= 2)
        #expect(integrity.missingCommits.isEmpty)
        let repair = try reopened.rebuild(buckets: Set(integrity.divergedBuckets))
        #expect(repair.fieldsRepaired >= 2)  // the forged value and the planted row
        #expect(repair.conflictsRepaired >= 1)
        #expect(repair.examples.contains("rec.3~status"))
        #expect(try reopened.checkIntegrity().isClean)
        #expect(try ReplicaSnapshot(reopened) == truth)
    }

    @Test func commitDeletedFromTheLogIsRestoredFromAPartner() throws {
        defer { network.cleanUp() }
        let (coord, others) = try populated()
        let victim = try #require(try allCommits(coord).first { $0.commit.origin == network.identities["pol"]!.id && $0.commit.seq == 3 })
        try coord.close()
        try tamper(coord, "DELETE FROM commits WHERE hash = x'\(Hex.encode(victim.hash))'")
        let reopened = try network.replica("coord")
        let integrity = try reopened.checkIntegrity()
        #expect(integrity.missingCommits[victim.commit.origin] == [3...3])

        // A forgery for the missing seq does not get in: it must link to the stored neighbours.
        let forged = try SignedCommit.sign(Commit(
            origin: victim.commit.origin, seq: 3, stamp: victim.commit.stamp, author: "mallory", prev: victim.commit.prev,
            ownerRefs: victim.commit.ownerRefs, changes: [Change(record: "rec.0", field: "status", value: "completed")]),
            with: network.identities["pol"]!)
        let refused = try reopened.apply([forged])
        #expect(refused.restored == 0 && refused.rejected.count == 1)

        let fromPartner = try others[0].rawCommits(origin: victim.commit.origin, seqs: 3...3)
        let report = try reopened.apply(fromPartner.map { try SignedCommit(canonicalBytes: $0.body, signature: $0.signature) })
        #expect(report.restored == 1)
        #expect(!report.restoredRecords.isEmpty)
        #expect(try reopened.checkIntegrity().isClean)
        #expect(try reopened.history(ofRecord: victim.commit.changes[0].record).contains { $0.commit.hash == victim.hash })
        #expect(try ReplicaSnapshot(reopened) == (try ReplicaSnapshot(others[0])))
    }

    @Test func missingFromVectorListsExactlyWhatAPeerLacks() throws {
        defer { network.cleanUp() }
        let (coord, _) = try populated()
        let vector = coord.versionVector
        var behind = vector
        let pol = network.identities["pol"]!.id
        behind[pol] = (vector[pol] ?? 0) - 2
        let missing = try coord.rawCommits(missingFrom: behind)
        #expect(missing.map(\.seq) == [vector[pol]! - 1, vector[pol]!])
        #expect(coord.missingCount(from: behind) == 2)
        #expect(try coord.rawCommits(missingFrom: vector).isEmpty)
        #expect(try coord.rawCommits(missingFrom: [:]).count == (try allCommits(coord)).count)
    }

    /// A commit an operator releases from the clock guard applies, but the local clock follows it
    /// only up to the guard, and a later local edit (which has seen it) supersedes it.
    @Test func releasedFarAheadCommitDoesNotDragTheClockOrWinLaterEdits() throws {
        defer { network.cleanUp() }
        let hour: Int64 = 3_600_000
        let fast = try network.replica("pol", inMemory: true, clockOffset: 24 * hour)
        let coord = try network.replica("coord", inMemory: true)
        try coord.commitLocal(author: "c", writes: [
            FieldWrite(record: "a", field: "kind", value: "activity"), FieldWrite(record: "a", field: "owner", value: "politie"),
        ])
        try fast.apply(try allCommits(coord))
        let ahead = try fast.commitLocal(author: "laptop", writes: [FieldWrite(record: "a", field: "status", value: "delayed")])
        let held = try coord.apply([ahead])
        #expect(held.held.map(\.reason) == [.clockAhead])
        let clockBefore = coord.clock
        try coord.releaseHeld(hash: ahead.hash)
        #expect(try coord.fields(ofRecord: "a")["status"]?.value == "delayed")
        let limit = network.clock.now + 5 * 60 * 1000
        #expect(coord.clock.milliseconds <= limit, "clock jumped to \(coord.clock) (before \(clockBefore))")
        try coord.commitLocal(author: "c", writes: [FieldWrite(record: "a", field: "status", value: "completed")])
        #expect(try coord.fields(ofRecord: "a")["status"]?.value == "completed")
        #expect(try coord.conflicts(record: "a").isEmpty)
    }
}

/// What a plain local write replaces while a field is in conflict.
@Suite struct ConflictWriteTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie")])

    @Test func aPlainWriteReplacesOnlyTheWritersOwnVersionsInAConflict() throws {
        let coord = try network.replica("coord", inMemory: true)
        let pol = try network.replica("pol", inMemory: true)
        try coord.commitLocal(author: "c", writes: [
            FieldWrite(record: "a", field: "kind", value: "activity"), FieldWrite(record: "a", field: "owner", value: "politie"),
        ])
        try pol.apply(try allCommits(coord))
        try coord.commitLocal(author: "c", writes: [FieldWrite(record: "a", field: "status", value: "delayed")])
        network.clock.advance(5)
        try pol.commitLocal(author: "p", writes: [FieldWrite(record: "a", field: "status", value: "completed")])
        try coord.apply(try allCommits(pol))
        try pol.apply(try allCommits(coord))
        func values(_ r: Replica) throws -> [JSONValue] {
            var out: [JSONValue] = []
            for c in try r.conflicts(record: "a") {
                for v in [c.winner] + c.losers { out.append(try JSONParser.parse(v.value)) }
            }
            return out
        }
        #expect(try values(coord) == ["completed", "delayed"])

        // jenv writes again without resolving: its own earlier value goes, politie's stays listed.
        network.clock.advance(5)
        try coord.commitLocal(author: "c", writes: [FieldWrite(record: "a", field: "status", value: "on-track")])
        try pol.apply(try allCommits(coord))
        #expect(try values(coord) == ["on-track", "completed"])
        #expect(try values(pol) == ["on-track", "completed"])

        // Resolving closes it everywhere.
        try pol.commitLocal(author: "p", writes: [FieldWrite(record: "a", field: "status", value: "completed")], resolving: true)
        try coord.apply(try allCommits(pol))
        #expect(try coord.conflicts(record: "a").isEmpty)
        #expect(try pol.conflicts(record: "a").isEmpty)
        #expect(try coord.fields(ofRecord: "a")["status"]?.value == "completed")

        // Without a conflict, a plain write replaces the value as usual.
        try coord.commitLocal(author: "c", writes: [FieldWrite(record: "a", field: "status", value: "delayed")])
        #expect(try coord.conflicts(record: "a").isEmpty)
    }
}
