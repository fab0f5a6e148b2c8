import Foundation
import GRDB
import ProgSyncCore
import ProgSyncStore
import Testing

/// A repair that costs what the divergence costs: the self-check names the records that changed
/// in diverged buckets, and the rebuild reads only their commits and writes only their bad rows.
@Suite struct TargetedRepairTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie")])

    /// 600 records in commits of 50, then concurrent edits that leave conflicts; returns the
    /// coordinator's replica (on disk) and a fresh replica that applied the same commits.
    func populated() throws -> (coord: Replica, fresh: Replica) {
        let coord = try network.replica("coord")
        let pol = try network.replica("pol", inMemory: true)
        for batch in 0..<12 {
            try coord.commitLocal(author: "c", writes: (0..<50).flatMap { k -> [FieldWrite] in
                let id = "rec.\(batch * 50 + k)"
                return [FieldWrite(record: id, field: "kind", value: "activity"), FieldWrite(record: id, field: "owner", value: "politie"),
                        FieldWrite(record: id, field: "status", value: "on-track")]
            })
        }
        try pol.apply(try allCommits(coord))
        for i in 0..<10 {
            try coord.commitLocal(author: "c", writes: [FieldWrite(record: "rec.\(i)", field: "status", value: "delayed")])
            try pol.commitLocal(author: "p", writes: [FieldWrite(record: "rec.\(i)", field: "status", value: "completed")])
            network.clock.advance(2)
        }
        try coord.apply(try allCommits(pol))
        let fresh = try network.replica("observer", inMemory: true)
        try fresh.apply(try allCommits(coord))
        #expect(try coord.conflicts().count == 10)
        return (coord, fresh)
    }

    /// Opens the coordinator's file behind its back, records every row written from now on, and
    /// runs `sql`.
    func tamper(_ sql: String) throws {
        let queue = try DatabaseQueue(path: network.path("coord"))
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE row_writes (tbl TEXT, record TEXT)")
            for table in ["fields", "conflicts"] {
                for (event, row) in [("INSERT", "new"), ("UPDATE", "new"), ("DELETE", "old")] {
                    try db.execute(sql: """
                        CREATE TRIGGER \(table)_\(event.lowercased()) AFTER \(event) ON \(table)
                        BEGIN INSERT INTO row_writes VALUES ('\(table)', \(row).record); END
                        """)
                }
            }
            try db.execute(sql: sql)
            try db.execute(sql: "DELETE FROM row_writes")
        }
        try queue.close()
    }

    func rowWrites(_ replica: Replica) throws -> [String] {
        try replica.read { db in try String.fetchAll(db, sql: "SELECT tbl || ':' || record FROM row_writes ORDER BY 1") }
    }

    @Test func aFewCorruptRecordsAmongManyAreRepairedFromTheirOwnCommitsOnly() throws {
        defer { network.cleanUp() }
        let (first, fresh) = try populated()
        var coord = first
        #expect(try first.checkIntegrity().isClean)  // keeps each record's sum as sound
        let coordID = network.identities["coord"]!.id.rawValue
        try first.close()
        try tamper("""
            UPDATE fields SET value = '"forged"' WHERE record = 'rec.7' AND field = 'status';
            DELETE FROM fields WHERE record = 'rec.123' AND field = 'owner';
            INSERT INTO conflicts (record, field, origin, seq, stamp, value) VALUES ('rec.321', 'status', '\(coordID)', 3, 1, '"planted"');
            """)
        coord = try network.replica("coord")
        let integrity = try coord.checkIntegrity()
        #expect(!integrity.divergedBuckets.isEmpty && integrity.divergedBuckets.count <= 3)
        #expect(integrity.suspects == ["rec.7", "rec.123", "rec.321"])
        let theirCommits = try coord.read { db in
            try Int.fetchOne(db, sql: "SELECT count(DISTINCT lsn) FROM record_commits WHERE record IN ('rec.7', 'rec.123', 'rec.321')")
        }
        let allCommitCount = try allCommits(coord).count
        let repair = try coord.rebuild(records: integrity.suspects, divergence: integrity.divergence)
        #expect(repair.records == 3)
        #expect(repair.commitsRead == theirCommits && repair.commitsRead < allCommitCount / 4)
        #expect(repair.fieldsRepaired == 2 && repair.conflictsRepaired == 1)
        #expect(repair.bucketsRebuiltWhole == 0 && repair.bucketsStillDiffering == 0)
        // Exactly the three bad rows were written: no other row of those records or their buckets.
        #expect(try rowWrites(coord) == ["conflicts:rec.321", "fields:rec.123", "fields:rec.7"])
        #expect(repair.rowsWritten == 3)
        #expect(try coord.checkIntegrity().isClean)
        #expect(try ReplicaSnapshot(coord) == (try ReplicaSnapshot(fresh)))
    }

    /// A record whose rows all vanished, with no sums kept yet: nothing names it, so its bucket
    /// does not add up after the named records and is rebuilt whole, from the log.
    @Test func divergenceTheSuspectsDoNotExplainRebuildsTheBucketWhole() throws {
        defer { network.cleanUp() }
        let (first, fresh) = try populated()
        var coord = first
        try first.close()
        try tamper("""
            DELETE FROM fields WHERE record = 'rec.42';
            UPDATE fields SET value = '"forged"' WHERE record = 'rec.500' AND field = 'kind';
            """)
        coord = try network.replica("coord")
        let integrity = try coord.checkIntegrity()
        #expect(!integrity.suspects.contains("rec.42"))
        #expect(integrity.suspects.contains("rec.500"))
        let repair = try coord.rebuild(records: integrity.suspects, divergence: integrity.divergence)
        #expect(repair.bucketsRebuiltWhole == 1 && repair.bucketsStillDiffering == 0)
        #expect(repair.fieldsRepaired == 4)
        #expect(Set(try rowWrites(coord)) == ["fields:rec.42", "fields:rec.500"])
        #expect(try coord.checkIntegrity().isClean)
        #expect(try ReplicaSnapshot(coord) == (try ReplicaSnapshot(fresh)))
    }
}
