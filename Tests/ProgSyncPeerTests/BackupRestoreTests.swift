import Foundation
import ProgSyncCore
import Testing

/// Backup with the real `progsync`, restore with the real `progsyncd`, and a restored node that
/// takes its own newer commits back from its partner before it writes again.
@Suite(.serialized) struct BackupRestoreTests {
    static let progsync = PeerNetwork.locate("progsync")

    func create(_ net: PeerNetwork, _ id: String, number: Int) async throws {
        let (status, body) = try await net.request("jenv", "PUT", "/v1/records/\(id)", [
            "kind": "activity", "result": "al1.r01", "number": .int(Int64(number)), "title": .string("Test \(id)"), "owner": "jenv",
        ])
        #expect(status == 201, "\(body)")
    }

    func ownSeq(_ net: PeerNetwork, on name: String) async throws -> Int64 {
        try await net.request(name, "GET", "/v1/status").1["versionVector"]?[net.nodes["jenv"]!.id]?.intValue ?? 0
    }

    @Test func restoredNodeTakesBackItsNewerCommitsAndDoesNotFork() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        try net.start("jenv")
        try net.start("politie")
        for i in 1...3 { try await create(net, "bk.\(i)", number: i) }
        _ = try await net.waitForAgreement()

        let file = net.root + "/jenv-backup.sqlite"
        let socket = ["--socket", net.nodes["jenv"]!.socket]
        let backup = try PeerNetwork.run(Self.progsync, ["backup", "-o", file] + socket)
        #expect(backup.status == 0, "\(backup.output)")
        #expect(backup.output.contains("integrity: ok") && FileManager.default.fileExists(atPath: file), "\(backup.output)")
        let again = try PeerNetwork.run(Self.progsync, ["backup", "-o", file] + socket)
        #expect(again.status == 1 && again.output.contains("already exists"), "\(again.output)")

        // Commits made after the backup, which the partner holds.
        for i in 4...5 { try await create(net, "bk.\(i)", number: i) }
        _ = try await net.write("jenv", "bk.1", "status", "delayed")
        _ = try await net.waitForAgreement()
        let heldByPolitie = try await ownSeq(net, on: "politie")
        #expect(heldByPolitie >= 6)

        let restore = ["restore", file, "--data-dir", net.nodes["jenv"]!.folder]
        let whileRunning = try PeerNetwork.run(PeerNetwork.progsyncd, restore)
        #expect(whileRunning.status != 0 && whileRunning.output.contains("already running"), "\(whileRunning.output)")
        net.stop("jenv")
        net.stop("politie")
        let restored = try PeerNetwork.run(PeerNetwork.progsyncd, restore)
        #expect(restored.status == 0, "\(restored.output)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: net.nodes["jenv"]!.folder)
            .filter { $0.hasPrefix("replica.sqlite.before-restore-") && !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }
        #expect(kept.count == 1, "the previous replica is kept beside the restored one")

        // The partner is away: the restored node must not write, or it would reuse a seq it holds.
        try net.start("jenv")
        #expect(try await ownSeq(net, on: "jenv") == 3)
        let (refused, answer) = try await net.request("jenv", "PATCH", "/v1/records/bk.2", ["status": "delayed"])
        #expect(refused == 503 && answer["error"]?.stringValue == "catching-up", "\(answer)")
        let waiting = try await net.request("jenv", "GET", "/v1/status").1["catchingUp"]
        #expect(waiting?["waitingFor"]?.arrayValue?.compactMap(\.stringValue) == ["politie"], "\(waiting ?? .null)")
        let shown = try PeerNetwork.run(Self.progsync, ["status"] + socket)
        #expect(shown.output.contains("LOCAL WRITES WAIT") && shown.output.contains("waiting for politie"), "\(shown.output)")

        // Back in touch: the node takes its commits back, then its next one follows them.
        try net.start("politie")
        var ack: AckedWrite?
        let deadline = Date().addingTimeInterval(30)
        while ack == nil, Date() < deadline {
            ack = try? await net.write("jenv", "bk.2", "status", "delayed")
            if ack == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let written = try #require(ack, "local writes never resumed: \(net.log("jenv").suffix(1500))")
        #expect(written.seq == heldByPolitie + 1)
        _ = try await net.waitForAgreement(timeout: 30)
        let politie = try await net.request("politie", "GET", "/v1/status").1
        #expect(politie["rejected"]?.intValue == 0 && politie["held"]?.intValue == 0, "\(politie)")
        #expect(try await net.request("jenv", "GET", "/v1/status").1["catchingUp"] == nil)
    }
}
