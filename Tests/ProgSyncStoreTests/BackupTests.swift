import Foundation
import GRDB
import ProgSyncCore
@testable import ProgSyncStore
import Synchronization
import Testing

/// Online backup, restore, the wait for the own chain after a restore, and migration safety.
@Suite struct BackupTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie")])

    func create(_ replica: Replica, _ id: String) throws -> SignedCommit {
        try replica.commitLocal(author: "anna", writes: [
            FieldWrite(record: id, field: "kind", value: "activity"),
            FieldWrite(record: id, field: "owner", value: "politie"),
            FieldWrite(record: id, field: "status", value: "on-track"),
        ])
    }

    @Test func backupWhileWritingIsConsistentAndChecked() throws {
        defer { network.cleanUp() }
        let pol = try network.replica("pol")
        for i in 0..<20 { _ = try create(pol, "a\(i)") }
        // A writer keeps committing while the copy is taken.
        let done = Atomic(false)
        let writer = Thread {
            var i = 0
            while !done.load(ordering: .relaxed) {
                _ = try? pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a\(i % 20)", field: "title", value: .string("t\(i)"))])
                i += 1
            }
        }
        writer.start()
        let file = network.folder.appendingPathComponent("backup.sqlite").path
        let check = try pol.backup(to: file)
        done.store(true, ordering: .relaxed)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(check.bytes > 0 && check.digestRecomputed)
        #expect(check.manifest?.node == pol.nodeID && check.manifest?.digest == check.digest)
        // The file on disk checks again the same way, and nothing temporary is left beside it.
        let again = try Replica.checkCopy(at: file)
        #expect(again.digest == check.digest)
        #expect(try FileManager.default.contentsOfDirectory(atPath: network.folder.path).filter { $0.contains(".partial-") }.isEmpty)
        // An existing file is refused unless overwriting was asked for.
        #expect(throws: ReplicaError.self) { try pol.backup(to: file) }
        #expect(try pol.backup(to: file, overwrite: true).bytes > 0)
        try pol.close()
    }

    @Test func aCopyWhoseRecordsDoNotMatchItsDigestIsRefused() throws {
        defer { network.cleanUp() }
        let pol = try network.replica("pol")
        _ = try create(pol, "a1")
        let file = network.folder.appendingPathComponent("backup.sqlite").path
        _ = try pol.backup(to: file)
        try pol.close()
        // A value changed behind the digest's back: SQLite's integrity check cannot see it.
        let queue = try DatabaseQueue(path: file)
        try queue.write { db in try db.execute(sql: "UPDATE fields SET value = '\"done\"' WHERE field = 'status'") }
        try queue.close()
        #expect { try Replica.checkCopy(at: file) } throws: { ($0 as? ReplicaError)?.code == .corrupt }
        // A restore checks first: the replica in place is neither replaced nor moved.
        let before = try Data(contentsOf: URL(fileURLWithPath: network.path("pol")))
        #expect(throws: ReplicaError.self) { try Replica.restore(from: file, to: network.path("pol"), node: network.identities["pol"]!.id) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: network.path("pol"))) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: network.folder.path).filter { $0.contains("before-restore") || $0.contains(".restoring") }.isEmpty)
        // A file that is no database at all.
        let junk = network.folder.appendingPathComponent("junk.sqlite").path
        try Data("not a database".utf8).write(to: URL(fileURLWithPath: junk))
        #expect { try Replica.checkCopy(at: junk) } throws: { ($0 as? ReplicaError)?.code == .corrupt }
    }

    /// The node restored from a backup takes back its newer commits before it writes again, so its
    /// next commit follows what the partner holds instead of forking its chain.
    @Test func restoredNodeWaitsForItsOwnChainAndDoesNotFork() throws {
        defer { network.cleanUp() }
        var pol = try network.replica("pol")
        let coord = try network.replica("coord")
        for i in 0..<3 { try coord.apply([try create(pol, "a\(i)")]) }
        let file = network.folder.appendingPathComponent("backup.sqlite").path
        _ = try pol.backup(to: file)
        for i in 3..<5 { try coord.apply([try create(pol, "a\(i)")]) }
        try pol.close()

        // Another node's backup is refused before anything moves.
        let other = network.folder.appendingPathComponent("coord-backup.sqlite").path
        _ = try coord.backup(to: other)
        #expect { try Replica.restore(from: other, to: network.path("pol"), node: pol.nodeID) } throws: {
            "\($0)".contains("not of this node")
        }
        let outcome = try Replica.restore(from: file, to: network.path("pol"), node: pol.nodeID)
        let previous = try #require(outcome.previous)
        #expect(FileManager.default.fileExists(atPath: previous))

        pol = try network.replica("pol")
        #expect(pol.versionVector[pol.nodeID] == 3)
        pol.expectOwnChain(from: [coord.nodeID])
        #expect { try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a0", field: "status", value: "delayed")]) } throws: {
            ($0 as? ReplicaError)?.code == .catchingUp
        }
        pol.partnerHolds(coord.versionVector, partner: coord.nodeID)
        #expect(pol.ownChainCatchUp?.heldByPartners == 5)
        #expect(throws: ReplicaError.self) { try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a0", field: "status", value: "delayed")]) }
        // The partner's feed gives the node its own commits 4 and 5 back.
        try pol.apply(try allCommits(coord))
        let next = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a0", field: "status", value: "delayed")])
        #expect(next.commit.seq == 6)
        let report = try coord.apply([next])
        #expect(report.applied == 1 && report.rejected.isEmpty)
        #expect(pol.ownChainCatchUp == nil)
        try pol.close()
        // The wait ended for good: it does not come back on the next start.
        pol = try network.replica("pol")
        #expect(pol.ownChainCatchUp == nil)
        try pol.close()
        try coord.close()
    }

    @Test func replicaFromANewerVersionIsRefused() throws {
        defer { network.cleanUp() }
        try network.replica("pol").close()
        let queue = try DatabaseQueue(path: network.path("pol"))
        try queue.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')") }
        try queue.close()
        #expect { try network.replica("pol") } throws: {
            ($0 as? ReplicaError)?.code == .newerDatabase && "\($0)".contains("v99-from-the-future")
        }
    }

    @Test func pendingMigrationsRunAfterACheckedCopyBesideTheReplica() throws {
        defer { network.cleanUp() }
        let older = try #require(Replica.migrator.migrations.dropLast().last)
        let queue = try DatabaseQueue(path: network.path("pol"))
        try Replica.migrator.migrate(queue, upTo: older)
        try queue.close()
        try network.replica("pol").close()
        let copies = try FileManager.default.contentsOfDirectory(atPath: network.folder.path)
            .filter { $0.hasPrefix("pol.sqlite.before-\(Replica.migrator.migrations.last!)-") }
        #expect(copies.count == 1)
        let copy = try Replica.checkCopy(at: network.folder.appendingPathComponent(copies[0]).path)
        #expect(copy.migrations.last == older)
        // Nothing pending: no second copy.
        try network.replica("pol").close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: network.folder.path).filter { $0.contains(".before-") }.count == 1)
    }

    /// GRDB runs each migration in its own transaction: one that fails leaves nothing behind,
    /// and the earlier ones stay applied.
    @Test func aFailingMigrationLeavesNothingHalfDone() throws {
        defer { network.cleanUp() }
        var migrator = Replica.migrator
        migrator.registerMigration("zz-fails-halfway") { db in
            try db.execute(sql: "CREATE TABLE half (x)")
            throw ReplicaError(.invalid, "fails on purpose")
        }
        let queue = try DatabaseQueue(path: network.path("pol"))
        #expect(throws: (any Error).self) { try migrator.migrate(queue) }
        let (half, applied) = try queue.read { db in (try db.tableExists("half"), try migrator.appliedIdentifiers(db)) }
        #expect(!half)
        #expect(applied == Set(Replica.migrator.migrations))
        try queue.close()
    }
}
