import Crypto
import Foundation
import GRDB
import ProgSyncCore
import ProgSyncStore
import Testing

/// A child process applying one large batch is killed with SIGKILL at random moments. Each time
/// the replica holds either none of the batch or all of it, and SQLite's integrity check passes.
@Suite struct CrashTests {
    static let commitsPerBatch = 3000

    static var writerPath: String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // The test binary may sit inside an .xctest bundle on some layouts.
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("progsync-crash-writer")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return exe.deletingLastPathComponent().appendingPathComponent("progsync-crash-writer").path
    }

    func run(_ db: String, killAfter delay: Double?) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.writerPath)
        process.arguments = [db, String(Self.commitsPerBatch)]
        process.standardOutput = FileHandle.nullDevice
        let start = Date()
        try process.run()
        if let delay {
            Thread.sleep(forTimeInterval: delay)
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        return Date().timeIntervalSince(start)
    }

    @Test func killedWriterLeavesAllOrNothing() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.writerPath), "missing \(Self.writerPath); build all targets first")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let origin = NodeIdentity(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 42, count: 32)))
        let registry = PartnerRegistry(nodes: [PartnerRegistry.Node(org: "jenv", publicKey: origin.publicKey)], coordinators: ["jenv"])

        let full = try run(folder.appendingPathComponent("calibrate.sqlite").path, killAfter: nil)
        var outcomes = (none: 0, all: 0)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<25 {
            let db = folder.appendingPathComponent("crash-\(i).sqlite").path
            let delay = Double.random(in: 0.2...1.6, using: &rng) * full
            _ = try run(db, killAfter: delay)
            let replica = try Replica(configuration: ReplicaConfiguration(
                path: db, identity: NodeIdentity(), org: "om", registry: registry, now: { 1_800_000_000_000 }))
            let integrity = try replica.read { try String.fetchAll($0, sql: "PRAGMA integrity_check") }
            #expect(integrity == ["ok"], "iteration \(i)")
            let stored = try replica.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM commits") ?? -1 }
            let fields = try replica.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM fields") ?? -1 }
            if stored == 0 {
                outcomes.none += 1
                #expect(fields == 0 && replica.versionVector.isEmpty, "iteration \(i): fields without commits")
            } else {
                outcomes.all += 1
                #expect(stored == Self.commitsPerBatch, "iteration \(i): partial batch of \(stored) commits")
                #expect(fields == Self.commitsPerBatch * 10)
                #expect(replica.versionVector[origin.id] == UInt64(Self.commitsPerBatch))
                #expect(try replica.recomputeDigestBuckets() == replica.digestBuckets)
            }
            try replica.close()
        }
        print("crash test: \(outcomes.none) kills left nothing, \(outcomes.all) left the whole batch (full run \(String(format: "%.2f", full)) s)")
        #expect(outcomes.none > 0, "no kill landed before the batch committed")
    }
}
