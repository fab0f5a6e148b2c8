import Foundation
import ProgSyncCore
import Testing

/// `--as-of` and `?asOf=` end to end, through the real CLI and daemon: the programme changes in
/// stages (status changes, a new activity, a reworded result, a delete and an undelete), and what
/// the report, the list and a record showed at the end of each stage is what they show as of
/// that moment afterwards. A node that made every commit itself held, at that moment, exactly the
/// commits stamped up to then: the replay of the log prefix.
@Suite(.serialized)
struct AsOfEndToEndTests {
    struct Seen {
        var instant: String
        var report: String
        var list: String
        var show: String
    }

    static let shown = "al1.r01.a01"

    /// What the CLI shows now; `asOf` adds `--as-of`.
    static func look(_ d: DaemonHarness, asOf: String? = nil) async throws -> Seen {
        let extra = asOf.map { ["--as-of", $0] } ?? []
        let report = try await d.runCLI(["report", "--lang", "en", "--details"] + extra)
        let list = try await d.runCLI(["records", "list", "--all", "--deleted", "--json"] + extra)
        let show = try await d.runCLI(["records", "show", shown, "--json"] + extra)
        for result in [report, list, show] { #expect(result.exitCode == 0, "\(result)") }
        // The report's heading names the moment; the rest must be equal.
        let text = asOf.map { report.stdout.replacingOccurrences(of: " · as of \($0)", with: "") } ?? report.stdout
        return Seen(instant: asOf ?? "", report: text, list: list.stdout, show: show.stdout)
    }

    /// The instant of the node's newest commit: the end of a stage.
    static func clock(_ d: DaemonHarness) async throws -> String {
        let hex = try #require(try await d.get("/v1/status")["clock"]?.stringValue)
        let stamp = try #require(Stamp(hex: hex))
        try await Task.sleep(for: .milliseconds(5))  // the next stage's stamps start in a later millisecond
        return Stamp.iso8601(milliseconds: stamp.milliseconds)
    }

    @Test func reportListAndShowAsOfEachStageEqualWhatTheyShowedThen() async throws {
        let d = try await DaemonHarness.started()
        defer { d.cleanup() }
        let stages: [[(String, String, JSONValue?)]] = [
            [],  // the 2021 programme as loaded
            [("PATCH", "/v1/records/al1.r01.a01", ["status": "completed"]),
             ("PUT", "/v1/records/al1.r01.a99", ["kind": "activity", "result": "al1.r01", "number": 99, "title": "Nieuw in 2022", "status": "on-track"])],
            [("DELETE", "/v1/records/al1.r01.a02", nil),
             ("PATCH", "/v1/records/al1.r01", ["title": "Herijkt resultaat"]),
             ("PATCH", "/v1/records/al1.r01.a01", ["status": "delayed", "explanation": "Vertraagd door de herijking"])],
            [("PATCH", "/v1/records/al1.r01.a02", ["deleted": false]),
             ("PATCH", "/v1/records/al1.r01.a99", ["status": "completed"])],
        ]
        var seen: [Seen] = []
        for stage in stages {
            for (method, path, body) in stage {
                let reply = try await d.request(method, path, body: body)
                #expect((200..<300).contains(reply.status), "\(method) \(path): \(reply)")
            }
            var now = try await Self.look(d)
            now.instant = try await Self.clock(d)
            seen.append(now)
        }
        // One more change, so that now differs from every stage.
        #expect(try await d.request("PATCH", "/v1/records/al1.r01.a01", body: ["status": "not-started"]).status == 200)
        #expect(Set(seen.map(\.report)).count == seen.count, "every stage changed the report")

        for (k, then) in seen.enumerated() {
            let asOf = try await Self.look(d, asOf: then.instant)
            #expect(asOf.report == then.report, "stage \(k): the report as of \(then.instant)")
            #expect(asOf.list == then.list, "stage \(k): the list as of \(then.instant)")
            #expect(asOf.show == then.show, "stage \(k): the record as of \(then.instant)")
        }

        // The API names the instant it answered for; a date before the programme shows nothing.
        let page = try await d.get("/v1/records?asOf=\(seen[1].instant)&limit=1")
        #expect(page["asOf"]?.stringValue == seen[1].instant)
        #expect(try await d.get("/v1/records?asOf=2000-01-01")["total"] == 0)
        let before = try await d.runCLI(["records", "show", Self.shown, "--as-of", "2000-01-01"])
        #expect(before.exitCode == 1 && before.stderr.contains("no record \(Self.shown) as of 2000-01-01"), "\(before)")
    }

    @Test func badMomentsAreRefusedClearly() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        for path in ["/v1/records?asOf=yesterday", "/v1/records/al1?asOf=2022-02-30", "/v1/records?asOf=2022-12-31T23:00:00"] {
            let reply = try await d.request("GET", path)
            #expect(reply.status == 400 && reply.json["error"] == "bad-request", "\(path): \(reply)")
            #expect(reply.json["message"]?.stringValue?.contains("RFC 3339") == true, "\(reply)")
        }
        for args in [["records", "list", "--as-of", "yesterday"], ["report", "--as-of", "31-12-2022"], ["records", "show", "al1", "--as-of", "2022"]] {
            let result = try await d.runCLI(args)
            #expect(result.exitCode == 2 && result.stderr.contains("--as-of"), "\(args): \(result)")
        }
    }
}
