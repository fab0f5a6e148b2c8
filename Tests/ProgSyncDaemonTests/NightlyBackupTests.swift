import Foundation
import Logging
import ProgSyncCore
@testable import ProgSyncDaemon
import ProgSyncStore
import Testing

@Suite struct NightlyBackupTests {
    /// Each run leaves a checked copy named by its time, and only the newest `keep` stay.
    @Test func keepsTheNewestCopies() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-nightly-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let identity = NodeIdentity()
        let replica = try Replica(configuration: ReplicaConfiguration(
            path: folder.appendingPathComponent("replica.sqlite").path, identity: identity, org: "jenv",
            registry: PartnerRegistry(nodes: [.init(org: "jenv", publicKey: identity.publicKey)], coordinators: ["jenv"])))
        defer { try? replica.close() }
        let backups = folder.appendingPathComponent("backups").path
        let nightly = NightlyBackup(replica: replica, schedule: ReconcileSchedule("03:00")!, folder: backups, keep: 2,
                                    logger: Logger(label: "test"))
        let start: UInt64 = 1_796_000_000_000
        var digests: [String] = []
        for day in 0..<4 {
            try replica.commitLocal(author: "anna", writes: [
                FieldWrite(record: "al\(day)", field: "kind", value: "action-line"),
                FieldWrite(record: "al\(day)", field: "number", value: .int(Int64(day + 1))),
                FieldWrite(record: "al\(day)", field: "title", value: .string("Nacht \(day)")),
            ])
            let check = try nightly.takeBackup(now: start + UInt64(day) * 86_400_000)
            digests.append(Hex.encode(check.digest))
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: backups).sorted()
        #expect(names == [2, 3].map { "replica-\(BackupName.timestamp(start + UInt64($0) * 86_400_000)).sqlite" })
        #expect(try names.map { Hex.encode(try Replica.checkCopy(at: backups + "/" + $0).digest) } == Array(digests.suffix(2)))
        #expect(Set(digests).count == 4, "each night's copy holds that night's replica")
    }
}
