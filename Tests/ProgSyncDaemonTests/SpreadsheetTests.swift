import Foundation
import ProgSyncCore
import Testing

/// The coordinator's spreadsheet round trip with a real LibreOffice Calc (headless): export a
/// CSV, open and save it as xlsx, save that as CSV again, import. Only edited cells may change,
/// text that looks like a formula must survive, and a cell edited in a sheet that is older than
/// a newer edit here must end as a visible conflict, never as a silent revert.
@Suite(.serialized, .sharedDaemon())
struct SpreadsheetTests {
    static let soffice: String? = ["/usr/bin/soffice", "/usr/local/bin/soffice", "/opt/libreoffice/program/soffice"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    static let inCI = ProcessInfo.processInfo.environment["CI"] == "true"

    /// CSV → xlsx → CSV through Calc: UTF-8 (76), comma, double quotes, formulas evaluated as
    /// Calc does by default, a private profile so no user settings leak in.
    static func throughCalc(_ csv: URL, in folder: URL) async throws -> URL {
        let soffice = try #require(soffice)
        let profile = "-env:UserInstallation=file://" + folder.appendingPathComponent("lo-profile").path
        let xlsxFolder = folder.appendingPathComponent("xlsx"), backFolder = folder.appendingPathComponent("back")
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = folder.path
        let toXLSX = try await runProcess(
            soffice, [profile, "--headless", "--infilter=CSV:44,34,76,1", "--convert-to", "xlsx", "--outdir", xlsxFolder.path, csv.path],
            environment: env, timeout: 120)
        let xlsx = xlsxFolder.appendingPathComponent(csv.deletingPathExtension().lastPathComponent + ".xlsx")
        try #require(FileManager.default.fileExists(atPath: xlsx.path), "soffice made no xlsx: \(toXLSX)")
        let toCSV = try await runProcess(
            soffice, [profile, "--headless", "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76,1", "--outdir", backFolder.path, xlsx.path],
            environment: env, timeout: 120)
        let back = backFolder.appendingPathComponent(csv.lastPathComponent)
        try #require(FileManager.default.fileExists(atPath: back.path), "soffice made no csv: \(toCSV)")
        return back
    }

    /// The `--json` answer of `progsync import`.
    static func importFile(_ d: DaemonHarness, _ file: URL) async throws -> JSONValue {
        let result = try await d.runCLI(["import", file.path, "--json"], timeout: 120)
        try #require(result.exitCode == 0, "\(result)")
        return try JSONParser.parse(result.stdoutBytes)
    }

    @Test func mondaySheetThroughCalcOnWednesday() async throws {
        guard Self.soffice != nil || Self.inCI else {
            print("SpreadsheetTests skipped: LibreOffice (soffice) is not installed; scripts/setup.sh --test installs it")
            return
        }
        try #require(Self.soffice != nil, "CI=true needs LibreOffice: run scripts/setup.sh --test")
        let d = try sharedDaemon()
        let folder = d.folder.appendingPathComponent("sheet-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let tricky = ["=1+1 is geen formule", "+31 6 1234 5678", "-5 dagen", "@politie", "'aanhalingsteken", "= SOM(A1:A3) Err"]
        for (i, text) in tricky.enumerated() {
            let reply = try await d.request("PUT", "/v1/records/e2e.xls.a0\(i + 1)", body: [
                "kind": "activity", "result": "e2e.xls", "number": .int(Int64(i + 1)), "title": .string("Blad \(i + 1)"),
                "explanation": .string(text), "status": "ongoing",
            ])
            try #require(reply.status == 201, "\(reply)")
        }

        // Monday: the export, through Calc untouched, imports as 0 changes.
        let monday = folder.appendingPathComponent("monday.csv")
        let export = try await d.runCLI(["export", "--format", "csv", "-o", monday.path])
        try #require(export.exitCode == 0, "\(export)")
        let digest = try await d.digestRoot()
        let untouched = try await Self.importFile(d, try await Self.throughCalc(monday, in: folder.appendingPathComponent("untouched")))
        #expect(untouched["changed"]?.intValue == 0, "\(untouched)")
        #expect(untouched["collisions"]?.arrayValue?.isEmpty == true, "\(untouched)")
        #expect(untouched["commits"]?.intValue == 0)
        #expect(untouched["withBasis"] == untouched["records"])
        #expect((untouched["unchanged"]?.intValue ?? 0) > 1000)
        #expect(try await d.digestRoot() == digest, "an unedited sheet wrote something")

        // The coordinator edits two cells in Monday's sheet.
        var text = try String(contentsOf: monday, encoding: .utf8)
        for (from, to) in [("Blad 1,", "Blad 1 bewerkt,"), ("e2e.xls.a02,activity,,e2e.xls,2,Blad 2,,ongoing,", "e2e.xls.a02,activity,,e2e.xls,2,Blad 2,,completed,")] {
            try #require(text.contains(from), "the export has no \(from)")
            text = text.replacingOccurrences(of: from, with: to)
        }
        let edited = folder.appendingPathComponent("edited.csv")
        try text.write(to: edited, atomically: true, encoding: .utf8)
        let wednesdaySheet = try await Self.throughCalc(edited, in: folder.appendingPathComponent("edited"))

        // Tuesday: a02's status changes through the API.
        let tuesday = try await d.request("PATCH", "/v1/records/e2e.xls.a02", body: ["status": "delayed"])
        try #require(tuesday.status == 200, "\(tuesday)")

        // Wednesday: Monday's edited sheet is imported.
        let answer = try await Self.importFile(d, wednesdaySheet)
        #expect(answer["changed"]?.intValue == 1, "only a01's title: \(answer)")
        let collisions = answer["collisions"]?.arrayValue ?? []
        #expect(collisions.map { "\($0["record"]?.stringValue ?? "") \($0["field"]?.stringValue ?? "") \($0["outcome"]?.stringValue ?? "")" }
            == ["e2e.xls.a02 status conflict"], "\(answer)")
        let a01 = try await d.get("/v1/records/e2e.xls.a01")
        #expect(a01["fields"]?["title"] == "Blad 1 bewerkt")
        for (i, text) in tricky.enumerated() {
            let record = try await d.get("/v1/records/e2e.xls.a0\(i + 1)")
            #expect(record["fields"]?["explanation"]?.stringValue == text, "formula-like text changed: \(record)")
        }
        // Tuesday's status is not reverted: it stands next to the sheet's as a conflict.
        let conflicts = try await d.get("/v1/conflicts")
        let a02 = try #require((conflicts["conflicts"]?.arrayValue ?? []).first { $0["record"] == "e2e.xls.a02" }, "\(conflicts)")
        #expect(a02["field"] == "status")
        #expect(Set(a02["versions"]?.arrayValue?.compactMap { $0["value"]?.stringValue } ?? []) == ["delayed", "completed"], "\(a02)")
        let listed = try await d.runCLI(["conflicts", "list"])
        #expect(listed.stdout.contains("e2e.xls.a02"), "\(listed)")
    }
}
