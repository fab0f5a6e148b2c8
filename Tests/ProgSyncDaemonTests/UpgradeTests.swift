import Foundation
import GRDB
import ProgSyncCore
import Testing

/// The real daemon and CLI around backups and schema versions.
@Suite struct UpgradeTests {
    /// A replica from a newer build: one clear line and a non-zero exit, and the file untouched.
    @Test func daemonRefusesAReplicaFromANewerVersion() async throws {
        let harness = try await DaemonHarness.started(empty: true)
        defer { harness.cleanup() }
        try await harness.stop()
        let replica = harness.dataDir + "/replica.sqlite"
        let queue = try DatabaseQueue(path: replica)
        try await queue.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')") }
        try queue.close()
        let result = try await runProcess(Binaries.progsyncd, harness.arguments, timeout: 30)
        #expect(result.exitCode == 1 && !result.signalled, "\(result)")
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("progsyncd: ") && lines[0].contains("newer progsync")
                && lines[0].contains("v99-from-the-future"), "\(result)")
        let applied = try await DatabaseQueue(path: replica).read { db in try String.fetchSet(db, sql: "SELECT identifier FROM grdb_migrations") }
        #expect(applied.contains("v99-from-the-future"), "no silent downgrade")
    }

    /// A replica one migration behind: the daemon copies it beside itself, says where, migrates.
    @Test func daemonCopiesTheReplicaBeforeMigrating() async throws {
        let harness = try await DaemonHarness.started(empty: true)
        defer { harness.cleanup() }
        _ = try await harness.request("PUT", "/v1/records/up.1", body: ["kind": "activity", "result": "al1.r01", "number": 1, "title": "Up", "owner": "jenv"])
        let digest = try await harness.digestRoot()
        try await harness.stop()
        // Undo the newest migration by hand, as a replica of the release before would be.
        let replica = harness.dataDir + "/replica.sqlite"
        let queue = try DatabaseQueue(path: replica)
        let newest = try await queue.write { db -> String in
            let newest = try String.fetchOne(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid DESC LIMIT 1")!
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = ?", arguments: [newest])
            // What undoes each recent migration ("": it only rewrites rows); a new migration
            // adds its line here.
            let undo = ["v6-local-authors": "DROP TABLE local_authors", "v7-newer-schema": "DROP TABLE newer_schema",
                        "v8-verified-record-sums": "DROP TABLE record_sums", "v9-web-users": "DROP TABLE web_users",
                        "v10-unknown-node": "", "v11-withheld-index": "DROP INDEX commits_withheld"]
            guard let statement = undo[newest] else { throw PeerlessTestError("UpgradeTests: say what undoes \(newest)") }
            if !statement.isEmpty { try db.execute(sql: statement) }
            return newest
        }
        try queue.close()
        let restarted = try DaemonHarness(empty: true, dataDir: harness.dataDir,
                                          arguments: ["--data-dir", harness.dataDir, "--log-level", "info", "--empty"])
        defer { restarted.cleanup() }
        try await restarted.start()
        #expect(try await restarted.digestRoot() == digest)
        let line = try #require(restarted.log.split(separator: "\n").first { $0.contains("copied the replica before migrating") })
        let copies = try FileManager.default.contentsOfDirectory(atPath: harness.dataDir).filter { $0.hasPrefix("replica.sqlite.before-\(newest)-") }
        #expect(copies.count == 1 && line.contains(copies.first ?? "?"), "\(line)")
    }

    @Test func backupRefusesBadTargetsWithOneLine() async throws {
        let harness = try await DaemonHarness.started(empty: true)
        defer { harness.cleanup() }
        // A relative path is the CLI's current folder, not the daemon's.
        let made = try await harness.runCLI(["backup", "-o", "copy.sqlite"])
        #expect(made.exitCode == 0 && made.stdout.contains("integrity: ok"), "\(made)")
        #expect(FileManager.default.fileExists(atPath: harness.folder.appendingPathComponent("copy.sqlite").path))
        for args in [["backup", "-o", "copy.sqlite"], ["backup", "-o", "/nonexistent-folder/copy.sqlite"]] {
            let refused = try await harness.runCLI(args)
            #expect(refused.exitCode == 1 && refused.stderr.split(separator: "\n").count == 1, "\(args): \(refused)")
        }
        #expect(try await harness.runCLI(["backup", "-o", "copy.sqlite", "--force"]).exitCode == 0)
        for body: JSONValue in [["path": "relative.sqlite"], ["path": "/tmp/x.sqlite", "mode": "fast"], ["path": "/tmp/x.sqlite", "force": "yes"]] {
            let reply = try await harness.request("POST", "/v1/backup", body: body)
            #expect(reply.status == 400 && reply.isErrorShape, "\(body): \(reply)")
        }
    }
}

struct PeerlessTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
