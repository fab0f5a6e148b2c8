import Foundation
import GRDB
import ProgSyncCore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SIGKILL during a 10,000-record import (issue 3) while PATCHes run alongside it: the file passes
/// SQLite's integrity check, after a restart the import is there whole or not at all, every write
/// acknowledged before the kill is there, and the daemon's own self-check finds nothing to mend.
@Suite(.serialized)
struct CrashImportTests {
    static let importSize = 10_000
    static let kills = 5
    static let killWindows: [ClosedRange<Double>] = [0.1...0.5, 0.5...0.9, 0.8...1.1, 1.0...1.5, 0.05...0.3]

    /// The import body: 10,000 activities of result `result`, written to a file for curl.
    static func writeImport(result: String, to url: URL) throws {
        var records: [JSONValue] = []
        records.reserveCapacity(importSize)
        for n in 1...importSize {
            records.append(activity("\(result).a\(n)", result: result, number: n % 9999 + 1, title: "Import \(result) nr. \(n)"))
        }
        try Data(JSONValue.object(["records": .array(records)]).canonicalBytes).write(to: url)
    }

    /// Starts `curl` posting `file` to /v1/import; the caller waits or kills.
    static func startImport(_ d: DaemonHarness, file: URL, output: URL) throws -> Process {
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: Binaries.curl)
        curl.arguments = [
            "-sS", "--unix-socket", d.socketPath, "-X", "POST", "-H", "Content-Type: application/json",
            "--data-binary", "@" + file.path, "-o", output.path, "-w", "%{http_code}", "http://localhost/v1/import",
        ]
        curl.standardOutput = FileHandle.nullDevice
        curl.standardError = FileHandle.nullDevice
        try curl.run()
        return curl
    }

    /// PATCHes one record's explanation, one after another, until the daemon stops answering.
    final class Patcher: Sendable {
        struct State {
            var acknowledged: [(seq: Int64, value: String)] = []
            var inFlight: String?
        }
        let record: String
        let state = Mutex(State())
        init(record: String) { self.record = record }

        func run(_ d: DaemonHarness, label: String) async {
            for n in 1... {
                let value = "\(label) wijziging \(n)"
                state.withLock { $0.inFlight = value }
                guard let reply = try? await d.request("PATCH", "/v1/records/\(record)", body: ["explanation": .string(value)], timeout: .seconds(10)),
                    reply.status == 200, let seq = reply.json["commit"]?["seq"]?.intValue
                else { return }  // the daemon was killed: this write may or may not have landed
                state.withLock {
                    $0.acknowledged.append((seq, value))
                    $0.inFlight = nil
                }
            }
        }
    }

    /// SQLite's own check of the file the killed daemon left (opening it recovers the WAL, as the
    /// daemon's next start would).
    static func integrity(ofReplicaIn dataDir: String) throws -> [String] {
        let db = try DatabaseQueue(path: dataDir + "/replica.sqlite")
        defer { try? db.close() }
        return try db.read { try String.fetchAll($0, sql: "PRAGMA integrity_check") }
    }

    /// `POST /v1/reconcile` on a node without partners: its self-check must find the log complete
    /// and the digest matching the winners, with nothing rebuilt or repaired.
    static func expectCleanSelfCheck(_ d: DaemonHarness, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let reply = try await d.request("POST", "/v1/reconcile", timeout: .seconds(120))
        try #require(reply.status == 200, "\(label): \(reply)", sourceLocation: sourceLocation)
        let check = try #require(reply.json["selfCheck"]?.objectValue, "\(label): \(reply.json)", sourceLocation: sourceLocation)
        #expect(check["missingCommits"] == 0 && check["divergedBuckets"] == 0, "\(label): \(check)", sourceLocation: sourceLocation)
        #expect(check["recordsRebuilt"] == nil && check["fieldsRepaired"] == nil, "\(label): \(check)", sourceLocation: sourceLocation)
        let reasons = try #require(reply.json["reasons"]?.arrayValue, "\(label): \(reply.json)", sourceLocation: sourceLocation)
        #expect(reasons.allSatisfy { $0.stringValue?.hasPrefix("no partner") == true }, "\(label): \(reasons)", sourceLocation: sourceLocation)
        #expect(reply.json["digest"]?.stringValue == (try await d.digestRoot()), sourceLocation: sourceLocation)
    }

    @Test func killDuringImportLeavesAllOrNothing() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }

        // Acknowledged one by one before any import.
        var acknowledged: [String: String] = [:]
        for n in 1...5 {
            let id = "ack.a0\(n)"
            let title = "Bevestigd \(n)"
            let reply = try await d.request("PUT", "/v1/records/\(id)", body: [
                "kind": "activity", "result": "ack", "number": .int(Int64(n)), "title": .string(title),
            ])
            #expect(reply.status == 201, "\(reply)")
            acknowledged[id] = title
        }
        let patch = try await d.request("PATCH", "/v1/records/ack.a01", body: ["status": "completed"])
        #expect(patch.status == 200)

        // Calibration: one import left to finish, timed from the request to the answer.
        let calibrationFile = d.folder.appendingPathComponent("calib.json")
        try Self.writeImport(result: "calib", to: calibrationFile)
        let answer = d.folder.appendingPathComponent("answer.json")
        let started = Date()
        let calibration = try Self.startImport(d, file: calibrationFile, output: answer)
        defer { if calibration.isRunning { kill(calibration.processIdentifier, SIGKILL) } }
        while calibration.isRunning {
            guard Date().timeIntervalSince(started) < 120 else { throw HarnessError("the calibration import did not finish in 120 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let full = Date().timeIntervalSince(started)
        let reply = try JSONParser.parse([UInt8](try Data(contentsOf: answer)))
        #expect(calibration.terminationStatus == 0)
        #expect(reply["records"]?.intValue == Int64(Self.importSize), "\(reply)")
        #expect(try await d.count("result=calib") == Self.importSize)
        print("crash import: a whole 10,000-record import takes \(String(format: "%.2f", full)) s")

        var outcomes = (none: 0, all: 0)
        var rng = SystemRandomNumberGenerator()
        for run in 0..<Self.kills {
            let result = "run\(run)"
            let file = d.folder.appendingPathComponent("\(result).json")
            try Self.writeImport(result: result, to: file)
            let innerBefore = try #require(try await d.get("/v1/digest")["inner"]?.arrayValue)
            // Kills spread over the whole import, as fractions of the calibrated duration: from
            // early (still receiving or checking the body) to around and past the commit (later
            // imports into a bigger replica take longer). The last run kills early enough that
            // the import cannot have committed, so a "0" is always seen.
            let range = Self.killWindows[run % Self.killWindows.count]
            let delay = max(0.05, Double.random(in: range, using: &rng) * full)
            let wal = d.dataDir + "/replica.sqlite-wal"
            func walSize() -> Int { ((try? FileManager.default.attributesOfItem(atPath: wal))?[.size] as? Int) ?? 0 }
            let walBefore = walSize()
            let answerFile = d.folder.appendingPathComponent("\(result).answer")
            let patcher = Patcher(record: "ack.a03")
            let patches = Task { await patcher.run(d, label: result) }
            let curl = try Self.startImport(d, file: file, output: answerFile)
            try await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            // How far the write had got: the WAL grows while the import's transaction writes.
            let walGrowth = walSize() - walBefore
            d.kill9()
            // curl ends when the socket closes; never wait on it for long.
            if !(await eventually(timeout: 10) { !curl.isRunning }) { kill(curl.processIdentifier, SIGKILL) }
            curl.waitUntilExit()
            await patches.value
            let patched = patcher.state.withLock { $0 }
            #expect(patched.acknowledged.count >= 1, "run \(run): no PATCH was acknowledged during the import")
            #expect(try Self.integrity(ofReplicaIn: d.dataDir) == ["ok"], "run \(run)")
            try await d.start()

            let imported = try await d.count("result=\(result)")
            // An import acknowledged before the kill must be there whole. The answer file is
            // empty or cut short when the kill came first.
            let answerBytes = FileManager.default.contents(atPath: answerFile.path).map { [UInt8]($0) } ?? []
            let importAcknowledged = (try? JSONParser.parse(answerBytes))?["records"]?.intValue == Int64(Self.importSize)
            if importAcknowledged {
                #expect(imported == Self.importSize, "run \(run): the import was acknowledged, then lost")
            }
            // Every acknowledged PATCH is in the record's history; the record shows the last one, or
            // the one in flight at the kill if that landed.
            let history = try #require(try await d.get("/v1/records/ack.a03/history")["history"]?.arrayValue)
            let explanations = Set(history.compactMap { entry -> String? in
                guard let seq = entry["seq"]?.intValue,
                    let change = entry["changes"]?.arrayValue?.first(where: { $0["field"] == "explanation" })
                else { return nil }
                return "\(seq) \(change["value"]?.stringValue ?? "")"
            })
            for ack in patched.acknowledged {
                #expect(explanations.contains("\(ack.seq) \(ack.value)"), "run \(run): the acknowledged PATCH \(ack) was lost")
            }
            let current = try await d.get("/v1/records/ack.a03")["fields"]?["explanation"]?.stringValue
            #expect(current == patched.acknowledged.last?.value || (current != nil && current == patched.inFlight),
                    "run \(run): ack.a03 shows \(current ?? "nothing"), the last acknowledged PATCH was \(patched.acknowledged.last?.value ?? "none")")
            try await Self.expectCleanSelfCheck(d, "run \(run)")
            #expect(imported == 0 || imported == Self.importSize, "run \(run): a partial import of \(imported) records")
            if imported == 0 {
                outcomes.none += 1
                // Only the PATCHed field's part of the digest may have moved; a partly applied
                // import would move nearly all of them.
                let innerAfter = try #require(try await d.get("/v1/digest")["inner"]?.arrayValue)
                let moved = zip(innerBefore, innerAfter).filter { $0 != $1 }.count
                #expect(innerAfter.count == innerBefore.count && moved <= 1, "run \(run): nothing imported, yet \(moved) digest nodes changed")
            } else {
                outcomes.all += 1
                let last = try await d.get("/v1/records/\(result).a\(Self.importSize)")
                #expect(last["fields"]?["title"]?.stringValue == "Import \(result) nr. \(Self.importSize)")
            }
            print("crash import: run \(run) killed after \(Int(delay * 1000)) ms (WAL +\(walGrowth / 1024) KiB) → \(imported) records, \(patched.acknowledged.count) PATCHes acknowledged")
            let activities = try await d.count("kind=activity")
            #expect(activities == acknowledged.count + Self.importSize * (1 + outcomes.all), "run \(run): \(activities) activities")

            // Everything acknowledged before the kill is still there.
            for (id, title) in acknowledged {
                let record = try await d.get("/v1/records/\(id)")
                #expect(record["fields"]?["title"]?.stringValue == title, "run \(run): \(id) lost")
            }
            #expect(try await d.get("/v1/records/ack.a01")["fields"]?["status"]?.stringValue == "completed")
            #expect(try await d.count("result=calib") == Self.importSize, "run \(run): the acknowledged import was lost")
            let digest = try await d.get("/v1/digest")
            #expect(digest["root"]?.stringValue?.count == 64 && digest["inner"]?.arrayValue?.count == 64)
            #expect(try await d.get("/v1/status")["digest"] == digest["root"])
            try? FileManager.default.removeItem(at: file)
        }
        print("crash import: \(outcomes.none) runs ended with 0 records, \(outcomes.all) with 10,000")
        #expect(outcomes.none >= 1, "no kill landed before the import committed")
        #expect(outcomes.none + outcomes.all == Self.kills)

        // The daemon still takes writes after all those kills, and its self-check is clean.
        let after = try await d.request("PATCH", "/v1/records/ack.a02", body: ["status": "ongoing"])
        #expect(after.status == 200, "\(after)")
        try await Self.expectCleanSelfCheck(d, "at the end")
        let (code, _) = try await d.stop()
        #expect(code == 0)
    }
}
