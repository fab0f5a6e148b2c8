import Foundation
import GRDB
import ProgSyncCore
@testable import ProgSyncStore
import Testing

/// A full database (SQLite's max_page_count stands in for a full disk: the same SQLITE_FULL,
/// without root): a group of local writes fails whole with `StorageFailure`, the replica and its
/// in-memory state stay as they were, and the same writes succeed once there is room.
@Suite struct StorageFailureTests {
    @Test func aFullDatabaseFailsTheWholeGroupAndChangesNothing() throws {
        let network = TestNetwork(nodes: [("jenv", "jenv")])
        defer { network.cleanUp() }
        let replica = try network.replica("jenv")
        defer { try? replica.close() }
        try replica.commitLocal(author: "anna", writes: [FieldWrite(record: "r.1", field: "explanation", value: "begin")])

        func limitPages(to count: Int?) throws {
            try replica.pool.writeWithoutTransaction { db in
                let pages = try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0
                try db.execute(sql: "PRAGMA max_page_count = \(count ?? pages)")
            }
        }
        let big = (0..<200).map { FieldWrite(record: "big.\($0)", field: "explanation", value: .string(String(repeating: "x", count: 900))) }
        let small = [FieldWrite(record: "r.1", field: "explanation", value: "klein")]
        let group = [LocalWrite(author: "anna", writes: big), LocalWrite(author: "anna", writes: small)]

        try limitPages(to: nil)
        let vector = replica.versionVector, root = replica.digestRoot, lsn = try replica.lastLSN, clock = replica.clock
        let refused = replica.commitLocalGroup(group)
        for result in refused {
            guard case .failure(let error) = result else {
                Issue.record("a write landed on a full database")
                continue
            }
            #expect(StorageFailure(error)?.kind == .full, "\(error)")
        }
        #expect(replica.versionVector == vector && replica.digestRoot == root && replica.clock == clock)
        #expect(try replica.lastLSN == lsn)
        #expect(try replica.fields(ofRecord: "r.1")["explanation"]?.version.value == Array("\"begin\"".utf8))

        try limitPages(to: 1 << 30)
        let landed = replica.commitLocalGroup(group)
        #expect(landed.allSatisfy { if case .success = $0 { true } else { false } }, "\(landed)")
        #expect(replica.versionVector[replica.nodeID] == (vector[replica.nodeID] ?? 0) + 2)
        #expect(try replica.checkIntegrity().divergedBuckets.isEmpty)
    }
}
