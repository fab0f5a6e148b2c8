import Crypto
import Foundation
import GRDB
import ProgSyncCore
import ProgSyncStore
import Synchronization
import Testing

/// A child process writes acknowledged commits one by one, then applies one large batch, and is
/// killed with SIGKILL: at random moments while the batch is being applied, and at the moment its
/// transaction holds every row but has not committed. Each time every acknowledged commit is
/// there, the replica holds either none of the batch or all of it, and SQLite's integrity check
/// passes.
@Suite struct CrashTests {
    static let commitsPerBatch = 3000
    static let seedCommits = 20

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

    /// The writer process and the lines it reported, each with the time the parent read it.
    final class Writer {
        final class Lines: Sendable {
            let list = Mutex<[(line: String, at: Date)]>([])
        }
        let process = Process()
        let stdin = Pipe()
        private let lines = Lines()

        init(db: String, hold: Bool) throws {
            process.executableURL = URL(fileURLWithPath: CrashTests.writerPath)
            process.arguments = [db, String(CrashTests.commitsPerBatch), String(CrashTests.seedCommits)] + (hold ? ["hold"] : [])
            let stdout = Pipe()
            process.standardOutput = stdout
            process.standardInput = stdin
            try process.run()
            let reader = stdout.fileHandleForReading
            Thread.detachNewThread { [lines] in
                var pending = Data()
                while true {
                    let chunk = reader.availableData
                    if chunk.isEmpty { return }
                    pending.append(chunk)
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                        pending.removeSubrange(pending.startIndex...newline)
                        lines.list.withLock { $0.append((line, Date())) }
                    }
                }
            }
        }

        var reported: [(line: String, at: Date)] { lines.list.withLock { $0 } }

        /// When the writer reported `line`, waiting for it up to `timeout` seconds; nil if it did not.
        func wait(for line: String, timeout: Double = 120) -> Date? {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if let hit = reported.first(where: { $0.line == line }) { return hit.at }
                if !process.isRunning, reported.first(where: { $0.line == line }) == nil {
                    Thread.sleep(forTimeInterval: 0.05)  // the last lines may still be in the pipe
                    return reported.first { $0.line == line }?.at
                }
                Thread.sleep(forTimeInterval: 0.001)
            }
            return nil
        }

        /// The seqs the writer said were durable.
        var acknowledged: [Int] {
            reported.compactMap { $0.line.hasPrefix("acknowledged ") ? Int($0.line.dropFirst("acknowledged ".count)) : nil }
        }

        func kill9() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    struct Stored {
        var seqs: Set<Int>
        var fields: Int
        var vector: UInt64?
    }

    /// Opens the replica the writer left, checks its integrity and digest, and reads what is stored.
    func inspect(_ db: String, origin: NodeIdentity, registry: PartnerRegistry, _ label: String) throws -> Stored {
        let replica = try Replica(configuration: ReplicaConfiguration(
            path: db, identity: NodeIdentity(), org: "om", registry: registry, now: { 1_800_000_000_000 }))
        defer { try? replica.close() }
        let integrity = try replica.read { try String.fetchAll($0, sql: "PRAGMA integrity_check") }
        #expect(integrity == ["ok"], "\(label)")
        #expect(try replica.recomputeDigestBuckets() == replica.digestBuckets, "\(label): the digest does not match the rows")
        let seqs = try replica.read { try Int.fetchAll($0, sql: "SELECT seq FROM commits") }
        let fields = try replica.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM fields") ?? -1 }
        return Stored(seqs: Set(seqs), fields: fields, vector: replica.versionVector[origin.id])
    }

    @Test func killedWriterLeavesAllOrNothing() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.writerPath), "missing \(Self.writerPath); build all targets first")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let origin = NodeIdentity(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 42, count: 32)))
        let registry = PartnerRegistry(nodes: [PartnerRegistry.Node(org: "jenv", publicKey: origin.publicKey)], coordinators: ["jenv"])
        let seeded = Set(1...Self.seedCommits)
        let total = Self.seedCommits + Self.commitsPerBatch

        // Calibration: left to finish, the writer reports every step and stores everything.
        let calibrationDB = folder.appendingPathComponent("calibrate.sqlite").path
        let calibration = try Writer(db: calibrationDB, hold: false)
        calibration.process.waitUntilExit()
        #expect(calibration.process.terminationStatus == 0, "the writer failed: \(calibration.reported.map(\.line))")
        let applying = try #require(calibration.wait(for: "applying", timeout: 1), "\(calibration.reported.map(\.line))")
        let applied = try #require(calibration.wait(for: "applied \(Self.commitsPerBatch)", timeout: 1), "\(calibration.reported.map(\.line))")
        try #require(calibration.acknowledged == Array(1...Self.seedCommits))
        let full = try inspect(calibrationDB, origin: origin, registry: registry, "calibration")
        try #require(full.seqs == Set(1...total) && full.fields == total * 10 && full.vector == UInt64(total))
        let batchTime = applied.timeIntervalSince(applying)

        var outcomes = (none: 0, all: 0, heldOpen: 0)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<25 {
            let db = folder.appendingPathComponent("crash-\(i).sqlite").path
            // Every fifth run is killed while its batch transaction is open with every row written.
            let holdOpen = i % 5 == 0
            let writer = try Writer(db: db, hold: holdOpen)
            var committed = false
            if holdOpen {
                try #require(writer.wait(for: "open") != nil, "run \(i): the writer never opened its batch: \(writer.reported.map(\.line))")
                writer.kill9()
                outcomes.heldOpen += 1
            } else {
                try #require(writer.wait(for: "applying") != nil, "run \(i): the writer never reached its batch: \(writer.reported.map(\.line))")
                Thread.sleep(forTimeInterval: Double.random(in: 0...1.3, using: &rng) * batchTime)
                writer.kill9()
                committed = writer.reported.contains { $0.line.hasPrefix("applied ") }
            }
            try #require(writer.acknowledged == Array(1...Self.seedCommits), "run \(i): \(writer.reported.map(\.line))")

            let stored = try inspect(db, origin: origin, registry: registry, "run \(i)")
            #expect(stored.seqs.isSuperset(of: seeded), "run \(i): acknowledged commits lost: \(seeded.subtracting(stored.seqs).sorted())")
            let batch = stored.seqs.subtracting(seeded).count
            if batch == 0 {
                outcomes.none += 1
                #expect(!committed, "run \(i): the batch was acknowledged, then lost")
                #expect(stored.fields == Self.seedCommits * 10 && stored.vector == UInt64(Self.seedCommits), "run \(i): fields without commits")
            } else {
                outcomes.all += 1
                #expect(!holdOpen, "run \(i): a batch killed before its commit survived")
                #expect(stored.seqs == Set(1...total), "run \(i): partial batch of \(batch) commits")
                #expect(stored.fields == total * 10 && stored.vector == UInt64(total))
            }
        }
        print("crash test: \(outcomes.none) kills left nothing of the batch (\(outcomes.heldOpen) with its transaction held open), \(outcomes.all) left the whole batch (batch \(String(format: "%.2f", batchTime)) s)")
        #expect(outcomes.none > outcomes.heldOpen, "no random kill landed before the batch committed")
    }
}
