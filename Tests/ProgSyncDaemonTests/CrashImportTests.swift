import Foundation
import ProgSyncCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SIGKILL during a 10,000-record import (issue 3): after a restart the import is there whole or
/// not at all, and everything acknowledged before the kill is there.
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
            let digestBefore = try await d.digestRoot()
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
            let curl = try Self.startImport(d, file: file, output: answerFile)
            try await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            // How far the write had got: the WAL grows while the import's transaction writes.
            let walGrowth = walSize() - walBefore
            d.kill9()
            // curl ends when the socket closes; never wait on it for long.
            if !(await eventually(timeout: 10) { !curl.isRunning }) { kill(curl.processIdentifier, SIGKILL) }
            curl.waitUntilExit()
            try await d.start()

            let imported = try await d.count("result=\(result)")
            // An import acknowledged before the kill must be there whole.
            if let data = FileManager.default.contents(atPath: answerFile.path), let answer = try? JSONParser.parse([UInt8](data)),
                answer["records"]?.intValue == Int64(Self.importSize)
            {
                #expect(imported == Self.importSize, "run \(run): the import was acknowledged, then lost")
            }
            #expect(imported == 0 || imported == Self.importSize, "run \(run): a partial import of \(imported) records")
            if imported == 0 {
                outcomes.none += 1
                #expect(try await d.digestRoot() == digestBefore, "run \(run): nothing imported, yet the digest changed")
            } else {
                outcomes.all += 1
                let last = try await d.get("/v1/records/\(result).a\(Self.importSize)")
                #expect(last["fields"]?["title"]?.stringValue == "Import \(result) nr. \(Self.importSize)")
            }
            print("crash import: run \(run) killed after \(Int(delay * 1000)) ms (WAL +\(walGrowth / 1024) KiB) → \(imported) records")
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

        // The daemon still takes writes after all those kills.
        let after = try await d.request("PATCH", "/v1/records/ack.a02", body: ["status": "ongoing"])
        #expect(after.status == 200, "\(after)")
        let (code, _) = try await d.stop()
        #expect(code == 0)
    }
}
