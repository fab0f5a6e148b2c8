import Foundation
import ProgSyncCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The change feed follows the writer's commits, whatever path made them: here a commit that
/// reconciliation puts back into a log that had lost it, with no field to repair (so no other
/// write would have published it).
@Suite(.serialized) struct ChangeFeedTests {
    @Test func aCommitRestoredByReconciliationReachesTheEventStream() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        // politie dials (jenv stands by), so nothing pushes jenv's commit to politie again after
        // its restart: only reconciliation can restore it, as in OfflineTests.repairAfterCorruption.
        net.nodes["politie"]!.environment["PROGSYNC_PEERS_CONNECT"] = "jenv"
        try net.start("jenv", sample: true)
        try net.start("politie")
        _ = try await net.waitForAgreement()
        let (patched, body) = try await net.request("jenv", "PATCH", "/v1/records/al1.r01.a03", ["status": "delayed"])
        try #require(patched == 200, "\(body)")
        let origin = try #require(body["commit"]?["origin"]?.stringValue), seq = try #require(body["commit"]?["seq"]?.intValue)
        _ = try await net.waitForAgreement()

        // Behind politie's back: the commit goes from its log; its fields keep the commit's values.
        net.stop("politie")
        let script = """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            print(db.execute("DELETE FROM commits WHERE origin = ? AND seq = ?", (sys.argv[2], int(sys.argv[3]))).rowcount)
            db.commit()
            """
        let python = try PeerNetwork.run("/usr/bin/env", ["python3", "-c", script, net.nodes["politie"]!.folder + "/replica.sqlite", origin, "\(seq)"])
        try #require(python.status == 0 && python.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "python3/sqlite3: \(python.output)")
        try net.start("politie")

        // A subscriber on politie's change stream, from now on.
        let output = URL(fileURLWithPath: net.root + "/politie-events.txt")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = ["-sS", "-N", "--unix-socket", net.nodes["politie"]!.socket, "http://localhost/v1/events"]
        let handle = try FileHandle(forWritingTo: output)
        curl.standardOutput = handle
        curl.standardError = FileHandle.nullDevice
        try curl.run()
        defer {
            if curl.isRunning { kill(curl.processIdentifier, SIGKILL) }
            curl.waitUntilExit()
            try? handle.close()
        }
        func received() -> String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }
        #expect(try await eventually(10) { received().contains(": progsync events") }, "the stream did not open: \(received())")

        let (status, report) = try await net.request("politie", "POST", "/v1/reconcile")
        #expect(status == 200 && report["verdict"] == "in agreement", "\(report)")
        #expect(report["selfCheck"]?["commitsRestored"] == 1 && report["selfCheck"]?["fieldsRepaired"] == 0, "\(report["selfCheck"] ?? .null)")
        func restoredEvent() -> Bool {
            received().split(separator: "\n").contains { line in
                guard line.hasPrefix("data: "), let event = try? JSONParser.parse(String(line.dropFirst(6))) else { return false }
                return event["origin"]?.stringValue == origin && event["seq"]?.intValue == seq
            }
        }
        #expect(try await eventually(5) { restoredEvent() }, "the restored commit \(origin)/\(seq) never reached the stream: \(received())")
    }
}
