import Foundation
import ProgSyncCore
import Testing

/// The real `progsync` binary against a real daemon holding the 2021 programme.
/// Exit codes (the CLI's documented contract): 0 ok, 1 the daemon refused (or a local step
/// failed), 2 usage error, 3 progsyncd unreachable.
@Suite(.serialized, .sharedDaemon())
struct CLITests {
    @Test func status() async throws {
        let d = try sharedDaemon()
        let node = try #require(try await d.get("/v1/status")["node"]?.stringValue)
        let result = try await d.runCLI(["status"])
        #expect(result.exitCode == 0, "\(result)")
        #expect(result.stdout.contains(node), "\(result)")
        #expect(result.stdout.contains("jenv"))
        #expect(result.stdout.contains("5 action lines, 34 results"), "\(result)")
        #expect(result.stderr.isEmpty, "\(result)")
    }

    @Test func listWithKindAndLimit() async throws {
        let d = try sharedDaemon()
        let result = try await d.runCLI(["records", "list", "--kind", "activity", "--limit", "5"])
        #expect(result.exitCode == 0, "\(result)")
        let lines = result.stdout.split(separator: "\n")
        let rows = lines.filter { $0.hasPrefix("al") }
        #expect(rows.count == 5, "\(result)")
        #expect(rows.allSatisfy { $0.contains("activity") })
        #expect(lines.first?.hasPrefix("ID") == true, "a header row: \(result)")
        #expect(result.stdout.contains("showing 1–5 of"), "\(result)")
        let expected = try await d.get("/v1/records?kind=activity&limit=5")["records"]?.strings("id") ?? []
        #expect(rows.map { String($0.split(separator: " ").first ?? "") } == expected)
    }

    @Test func show() async throws {
        let d = try sharedDaemon()
        let result = try await d.runCLI(["records", "show", "al1.r01.a01"])
        #expect(result.exitCode == 0, "\(result)")
        #expect(result.stdout.contains("record al1.r01.a01"))
        #expect(result.stdout.contains("Training politie-medewerkers"))
        #expect(result.stdout.contains("by progsyncd (jenv)"), "the version of each field: \(result)")
    }

    @Test func setStatusByDutchLabelThenShowAndHistory() async throws {
        let d = try sharedDaemon()
        let set = try await d.runCLI(["records", "set", "al1.r02.a01", "status=In uitvoering maar met vertraging"])
        #expect(set.exitCode == 0, "\(set)")
        #expect(set.stdout.contains("updated al1.r02.a01"), "\(set)")
        let show = try await d.runCLI(["records", "show", "al1.r02.a01"])
        #expect(show.exitCode == 0)
        #expect(show.stdout.contains("delayed"), "\(show)")
        #expect(show.stdout.contains("by root"), "the status was set by the Unix user: \(show)")
        #expect(try await d.get("/v1/records/al1.r02.a01")["fields"]?["status"]?.stringValue == "delayed")

        let history = try await d.runCLI(["records", "history", "al1.r02.a01"])
        #expect(history.exitCode == 0, "\(history)")
        #expect(history.stdout.contains("AUTHOR"))
        #expect(history.stdout.contains("root"), "\(history)")
        #expect(history.stdout.contains("status=\"delayed\""), "\(history)")
        #expect(history.stdout.contains("progsyncd"), "the sample load is the first entry: \(history)")
    }

    @Test func digestEqualsTheAPI() async throws {
        let d = try sharedDaemon()
        let result = try await d.runCLI(["digest"])
        #expect(result.exitCode == 0, "\(result)")
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == (try await d.digestRoot()))
    }

    @Test func globalOptionsBeforeTheSubcommand() async throws {
        let d = try sharedDaemon()
        // PROGSYNC_SOCKET points nowhere, so only the option can reach the daemon.
        let nowhere = ["PROGSYNC_SOCKET": d.folder.appendingPathComponent("no.sock").path]
        let digest = try await d.runCLI(["--socket", d.socketPath, "digest"], environment: nowhere)
        #expect(digest.exitCode == 0, "\(digest)")
        #expect(digest.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == (try await d.digestRoot()))
        let status = try await d.runCLI(["--json", "status"])
        #expect(status.exitCode == 0, "\(status)")
        #expect((try? JSONParser.parse(status.stdoutBytes))?["node"]?.stringValue != nil, "\(status)")
        let nested = try await d.runCLI(["--socket=\(d.socketPath)", "--json", "records", "list", "--limit", "2"], environment: nowhere)
        #expect(nested.exitCode == 0, "\(nested)")
        #expect((try? JSONParser.parse(nested.stdoutBytes))?["records"]?.arrayValue?.count == 2, "\(nested)")
        // After the subcommand, as before.
        #expect(try await d.runCLI(["digest", "--socket", d.socketPath], environment: nowhere).exitCode == 0)
        // A global option with no subcommand is a usage error, not a crash.
        let alone = try await d.runCLI(["--json"])
        #expect(alone.exitCode == 2, "\(alone)")
    }

    @Test func aZeroConfigNodeIsStandalone() async throws {
        let d = try sharedDaemon()
        let result = try await d.runCLI(["status"])
        #expect(result.stdout.contains("no partners configured (standalone)"), "\(result)")
        #expect(!result.stdout.contains("OFFLINE"), "\(result)")
    }

    @Test func csvExportImportExportIsByteIdentical() async throws {
        let d = try sharedDaemon()
        let first = d.folder.appendingPathComponent("first.csv").path
        let second = d.folder.appendingPathComponent("second.csv").path
        let export1 = try await d.runCLI(["export", "--format", "csv", "-o", first])
        #expect(export1.exitCode == 0, "\(export1)")
        let bytes1 = try Data(contentsOf: URL(fileURLWithPath: first))
        #expect(bytes1.starts(with: [0xEF, 0xBB, 0xBF]), "CSV starts with a UTF-8 byte order mark")
        #expect(bytes1.count > 10_000)
        let imported = try await d.runCLI(["import", first])
        #expect(imported.exitCode == 0, "\(imported)")
        #expect(imported.stdout.contains(" 0 cells changed, "), "an unedited export writes nothing: \(imported)")
        #expect(imported.stdout.contains("0 collided with newer edits (0 commits)"), "\(imported)")
        #expect(!imported.stdout.contains("no basis"), "\(imported)")
        let export2 = try await d.runCLI(["export", "--format", "csv", "-o", second])
        #expect(export2.exitCode == 0, "\(export2)")
        let bytes2 = try Data(contentsOf: URL(fileURLWithPath: second))
        #expect(bytes1 == bytes2, "export → import → export changed the CSV (\(bytes1.count) vs \(bytes2.count) bytes)")
        // JSON too.
        let json1 = try await d.runCLI(["export"])
        let jsonFile = d.folder.appendingPathComponent("export.json").path
        try Data(json1.stdoutBytes).write(to: URL(fileURLWithPath: jsonFile))
        let reimported = try await d.runCLI(["import", jsonFile])
        #expect(reimported.exitCode == 0, "\(reimported)")
        #expect(reimported.stdout.contains(" 0 cells changed, "), "only differing values are written: \(reimported)")
        #expect(reimported.stdout.contains("names no basis"), "says that the file had no basis: \(reimported)")
        let json2 = try await d.runCLI(["export"])
        #expect(json1.stdoutBytes == json2.stdoutBytes)
        let parsed = try JSONParser.parse(json1.stdoutBytes)
        #expect((parsed["records"]?.arrayValue?.count ?? 0) >= 161)
    }

    @Test func htmlReportIsSelfContained() async throws {
        let d = try sharedDaemon()
        let file = d.folder.appendingPathComponent("overzicht.html").path
        let result = try await d.runCLI(["report", "--format", "html", "-o", file])
        #expect(result.exitCode == 0, "\(result)")
        let html = try String(contentsOfFile: file, encoding: .utf8)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.contains("</html>"))
        #expect(html.contains("<style>"))
        #expect(html.contains("<svg"), "status charts")
        #expect(html.contains("Training politie-medewerkers"))
        for external in ["<link", " src=", "@import", "url(http", "<script"] {
            #expect(!html.contains(external), "the page loads something from outside: \(external)")
        }
        let markdown = try await d.runCLI(["report"])
        #expect(markdown.exitCode == 0 && markdown.stdout.contains("Training politie-medewerkers"), "\(markdown)")
    }

    @Test func jsonOutputParses() async throws {
        let d = try sharedDaemon()
        for args in [["status"], ["records", "list", "--limit", "3"], ["records", "show", "al1.r01.a01"],
                     ["records", "history", "al1.r01.a01"], ["digest"], ["conflicts", "list"], ["quarantine", "list"],
                     ["records", "list", "--kind", "action-line", "--all"]]
        {
            let result = try await d.runCLI(args + ["--json"])
            #expect(result.exitCode == 0, "\(args): \(result)")
            let json = try? JSONParser.parse(result.stdoutBytes)
            #expect(json?.objectValue != nil, "\(args) --json is not a JSON object: \(result.stdout.prefix(300))")
        }
        let list = try JSONParser.parse(try await d.runCLI(["records", "list", "--limit", "3", "--json"]).stdoutBytes)
        #expect(list["records"]?.arrayValue?.count == 3)
        let digest = try JSONParser.parse(try await d.runCLI(["digest", "--json"]).stdoutBytes)
        #expect(digest["root"]?.stringValue == (try await d.digestRoot()))
    }

    /// "." and ".." fit the record id characters `[A-Za-z0-9._:-]`, but no URL reaches them: HTTP
    /// clients, libcurl included, remove dot segments (`records show ..` would ask for `GET /v1/`,
    /// `records show .` for the list). Either the schema refuses these ids or the CLI and the
    /// daemon reach them.
    @Test func dotSegmentIDsAreRefusedOrReachable() async throws {
        let d = try await DaemonHarness.started(empty: true)
        defer { d.cleanup() }
        for id in [".", ".."] {
            let reply = try await d.request("POST", "/v1/import", body: [
                ["id": .string(id), "kind": "action-line", "number": 8, "title": "Punten"],
            ])
            if reply.status == 200 {
                let show = try await d.runCLI(["records", "show", id])
                #expect(show.exitCode == 0 && show.stdout.contains("Punten"), "record \(id) was created but cannot be shown: \(show)")
            } else {
                #expect((400..<500).contains(reply.status) && reply.isErrorShape, "\(reply)")
            }
        }
    }

    @Test func exitCodes() async throws {
        let d = try sharedDaemon()
        let before = try await d.digestRoot()

        // 2: usage. An unknown status is caught by the CLI before anything is sent.
        let klaar = try await d.runCLI(["records", "set", "al1.r01.a01", "status=klaar"])
        #expect(klaar.exitCode == 2, "\(klaar)")
        #expect(klaar.stderr.contains("klaar") && klaar.stderr.contains("delayed"), "names the allowed statuses: \(klaar)")
        let noSuchCommand = try await d.runCLI(["frobnicate"])
        #expect(noSuchCommand.exitCode == 2, "\(noSuchCommand)")
        let badID = try await d.runCLI(["records", "show", "a b"])
        #expect(badID.exitCode == 2, "\(badID)")
        let noChanges = try await d.runCLI(["records", "set", "al1.r01.a01"])
        #expect(noChanges.exitCode == 2, "\(noChanges)")

        // The CLI checks values against the schema before sending, so a bad number is a usage error too.
        let zero = try await d.runCLI(["records", "set", "al1.r01.a01", "number=0"])
        #expect(zero.exitCode == 2, "\(zero)")
        #expect(zero.stderr.contains("number"), "\(zero)")

        // 1: the daemon said no. Clearing a required field is sent (null is not checked locally)
        // and refused by the daemon.
        let noTitle = try await d.runCLI(["records", "set", "al1.r01.a01", "title="])
        #expect(noTitle.exitCode == 1, "\(noTitle)")
        #expect(noTitle.stderr.contains("title"), "\(noTitle)")
        let missing = try await d.runCLI(["records", "show", "no.such.record"])
        #expect(missing.exitCode == 1, "\(missing)")
        #expect(missing.stderr.contains("no.such.record"), "\(missing)")
        let missingSet = try await d.runCLI(["records", "set", "no.such.record", "title=x"])
        #expect(missingSet.exitCode == 1, "\(missingSet)")
        let incomplete = try await d.runCLI(["records", "set", "e2e.cli.new", "kind=activity", "title=Zonder resultaat"])
        #expect(incomplete.exitCode == 1, "\(incomplete)")
        #expect(incomplete.stderr.contains("result"), "names the missing field: \(incomplete)")
        #expect(try await d.digestRoot() == before, "a refused command changed the replica")

        // 3: unreachable, with a hint.
        let gone = d.folder.appendingPathComponent("gone.sock").path
        let unreachable = try await d.runCLI(["status"], environment: ["PROGSYNC_SOCKET": gone])
        #expect(unreachable.exitCode == 3, "\(unreachable)")
        #expect(unreachable.stderr.contains("is progsyncd running?"), "a hint: \(unreachable)")
        #expect(unreachable.stderr.contains(gone), "names the socket: \(unreachable)")
        let viaOption = try await d.runCLI(["records", "list", "--socket", gone])
        #expect(viaOption.exitCode == 3, "\(viaOption)")

        // 0: create through `set` with kind=… and the required fields.
        let created = try await d.runCLI(["records", "set", "e2e.cli.new", "kind=activity", "result=al1.r01", "number=99", "title=Nieuw via de CLI"])
        #expect(created.exitCode == 0, "\(created)")
        #expect(created.stdout.contains("created e2e.cli.new"), "\(created)")
        let deleted = try await d.runCLI(["records", "delete", "e2e.cli.new"])
        #expect(deleted.exitCode == 0, "\(deleted)")
        #expect(try await d.get("/v1/records/e2e.cli.new")["fields"]?["deleted"] == true)
    }
}
