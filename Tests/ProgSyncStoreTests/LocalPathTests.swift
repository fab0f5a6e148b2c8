import Foundation
import GRDB
import ProgSyncCore
import ProgSyncStore
import Synchronization
import Testing

/// The local API's hot paths in the store: the point read of one record on plain connections,
/// and group commit, where concurrent local writes share one transaction.
extension RepairTests {
    @Test func storedRowsAgreeWithTheFieldsAndTheCommitLog() throws {
        defer { network.cleanUp() }
        let (coord, others) = try populated()
        // coord is on disk (plain read connections); the others are in memory (the GRDB path).
        for replica in [coord] + others {
            var conflicted = 0
            for i in 0..<40 {
                let record = "rec.\(i)"
                let rows = try replica.storedRows(ofRecord: record)
                let fields = try replica.fields(ofRecord: record)
                let winners = rows.filter { !$0.isLoser }
                #expect(winners.map(\.field) == fields.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
                #expect(rows.prefix(winners.count).allSatisfy { !$0.isLoser }, "winners come first")
                for row in rows {
                    let state = try #require(fields[row.field])
                    let version = FieldVersion(value: row.value, stamp: row.stamp, origin: NodeID(row.origin)!, seq: row.seq)
                    if row.isLoser {
                        #expect(state.losers.contains(version))
                        #expect(row.author == nil)
                    } else {
                        #expect(state.version == version)
                        let author = try replica.author(of: version.ref)
                        #expect(row.author != nil && row.author == author)
                    }
                }
                #expect(rows.count - winners.count == fields.values.reduce(0) { $0 + $1.losers.count })
                if rows.count > winners.count { conflicted += 1 }
            }
            #expect(conflicted > 0, "the scenario should produce conflicts")
            #expect(try replica.storedRows(ofRecord: "rec.none").isEmpty)
        }
    }
}

@Suite struct GroupCommitTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie")])

    @Test func aRefusedWriteInAGroupIsRolledBackAloneAndTheChainStaysWhole() throws {
        defer { network.cleanUp() }
        let coord = try network.replica("coord")
        var pol: Replica? = try network.replica("pol")
        try coord.commitLocal(author: "c", writes: [
            FieldWrite(record: "a", field: "kind", value: "activity"), FieldWrite(record: "a", field: "owner", value: "politie"),
            FieldWrite(record: "b", field: "kind", value: "activity"), FieldWrite(record: "b", field: "owner", value: "jenv"),
        ])
        try pol!.apply(try allCommits(coord))
        let results = pol!.commitLocalGroup([
            LocalWrite(author: "p1", writes: [FieldWrite(record: "a", field: "status", value: "delayed")]),
            // politie does not own b: refused inside the transaction, after the first write.
            LocalWrite(author: "p2", writes: [FieldWrite(record: "b", field: "status", value: "completed")]),
            // Refused before the transaction: not a status.
            LocalWrite(author: "p3", writes: [FieldWrite(record: "a", field: "status", value: "bijna")]),
            LocalWrite(author: "p4", writes: [FieldWrite(record: "a", field: "explanation", value: "loopt")]),
        ])
        let landed = [try results[0].get(), try results[3].get()]
        #expect(landed.map(\.commit.author) == ["p1", "p4"])
        #expect(landed.map(\.commit.seq) == [1, 2])
        #expect(landed[1].commit.prev == landed[0].hash, "the second commit links to the first, not to the refused one")
        #expect(throws: ReplicaError.self) { try results[1].get() }
        #expect(throws: ReplicaError.self) { try results[2].get() }
        #expect(pol!.versionVector[network.identities["pol"]!.id] == 2)

        // Durable and whole after a reopen; a partner accepts the chain and agrees.
        try pol!.close()
        pol = nil
        let reopened = try network.replica("pol")
        #expect(try reopened.fields(ofRecord: "a")["status"]?.value == "delayed")
        #expect(try reopened.fields(ofRecord: "a")["explanation"]?.value == "loopt")
        #expect(try reopened.fields(ofRecord: "b")["status"] == nil)
        #expect(try reopened.checkIntegrity().isClean)
        let report = try coord.apply(try allCommits(reopened))
        #expect(report.rejected.isEmpty && report.held.isEmpty)
        #expect(coord.digestRoot == reopened.digestRoot)
    }
}

/// Record readers keep their read snapshot between reads; every commit of the writer must end
/// the old ones before it is acknowledged.
@Suite struct ReaderSnapshotTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie")])

    /// Eight readers at once, so more than one connection holds a snapshot; every read must work.
    func readConcurrently(_ replica: Replica, _ record: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            do { _ = try replica.storedRows(ofRecord: record) } catch { failures.withLock { $0.append("\(error)") } }
        }
        try #require(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })", sourceLocation: sourceLocation)
    }

    func status(_ replica: Replica, _ record: String) throws -> String? {
        try replica.storedRows(ofRecord: record).first { $0.field == "status" && !$0.isLoser }
            .map { String(decoding: $0.value, as: UTF8.self) }
    }

    @Test func aReadAfterACommitSeesItWhicheverPathMadeIt() throws {
        defer { network.cleanUp() }
        let coord = try network.replica("coord")
        let pol = try network.replica("pol", inMemory: true)
        try coord.commitLocal(author: "c", writes: [
            FieldWrite(record: "a", field: "kind", value: "activity"), FieldWrite(record: "a", field: "status", value: "not-started"),
        ])
        #expect(try status(coord, "a") == #""not-started""#)
        try readConcurrently(coord, "a")

        try coord.commitLocal(author: "c", writes: [FieldWrite(record: "a", field: "status", value: "delayed")])
        #expect(try status(coord, "a") == #""delayed""#, "a local commit")

        try pol.apply(try allCommits(coord))
        try pol.commitLocal(author: "p", writes: [
            FieldWrite(record: "p", field: "kind", value: "activity"), FieldWrite(record: "p", field: "owner", value: "politie"),
        ])
        #expect(try coord.storedRows(ofRecord: "p").isEmpty)
        try coord.apply(try allCommits(pol))
        #expect(try coord.storedRows(ofRecord: "p").contains { $0.field == "owner" }, "a remote commit")

        _ = coord.commitLocalGroup([LocalWrite(author: "g", writes: [FieldWrite(record: "a", field: "status", value: "completed")])])
        #expect(try status(coord, "a") == #""completed""#, "a group commit")
    }

    @Test func idleReadersHoldNoSnapshotAfterACommit() throws {
        defer { network.cleanUp() }
        let coord = try network.replica("coord")
        try coord.commitLocal(author: "c", writes: [FieldWrite(record: "a", field: "kind", value: "activity")])
        try readConcurrently(coord, "a")
        try coord.commitLocal(author: "c", writes: [FieldWrite(record: "a", field: "status", value: "delayed")])
        // A full checkpoint that truncates the WAL needs every reader off its old snapshot.
        let other = try DatabaseQueue(path: network.path("coord"))
        let result = try other.writeWithoutTransaction { db in try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        #expect(result?[0] as Int? == 0, "no reader blocks the checkpoint: \(String(describing: result))")
        try other.close()
        #expect(try status(coord, "a") == #""delayed""#)
    }
}
