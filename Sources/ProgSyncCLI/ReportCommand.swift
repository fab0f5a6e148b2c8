import ArgumentParser
import ProgSyncCore
import ProgSyncReport

/// The output formats of `progsync report`.
enum ReportFormat: String, CaseIterable, ExpressibleByArgument {
    case markdown
    case html

    init?(path: String) {
        let lower = path.lowercased()
        if lower.hasSuffix(".html") || lower.hasSuffix(".htm") {
            self = .html
        } else if lower.hasSuffix(".md") || lower.hasSuffix(".markdown") {
            self = .markdown
        } else {
            return nil
        }
    }
}

extension ReportLanguage: ExpressibleByArgument {}

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write the programme overview (action lines, results, activities and their status).",
        discussion: """
            Like the 2021 "Programmaresultaten" document: per action line and result, every \
            activity with its number, title, status (symbol and label) and owner; then the count \
            of activities per status per action line and overall; then the legend. HTML is one \
            self-contained page with a status chart per action line. Deleted records are left out.

            Examples:
              progsync report > overzicht.md
              progsync report --format html -o overzicht.html
              progsync report --lang en --details -o overview.md
              progsync report --as-of 2022-12-31 -o jaarverslag-2022.md

            --as-of shows the programme as it stood then, from the signed log: a date means \
            the end of that day in Amsterdam.
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(help: "markdown or html (default: from the output file's extension, else markdown).")
    var format: ReportFormat?

    @Option(help: "nl (Dutch labels) or en (English labels).")
    var lang: ReportLanguage = .nl

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp("Write to this file instead of stdout.", valueName: "file"))
    var output: String?

    @Flag(help: "Include each activity's explanation.")
    var details = false

    @OptionGroup var asOf: AsOfOption

    var resolvedFormat: ReportFormat { format ?? output.flatMap(ReportFormat.init(path:)) ?? .markdown }

    func run() async throws {
        let api = try options.api()
        let values = try await api.allRecords(query: asOf.queryItems)
        let report = ProgrammeReport(records: values.compactMap(FlatRecord.init(apiRecord:)))
        if options.json {
            Console.outLine(Self.countsJSON(report).prettyString())
            return
        }
        var date = Files.today()
        if let then = asOf.text { date += " · " + (lang == .nl ? "stand per " : "as of ") + then }
        let reportOptions = ReportOptions(language: lang, date: date, details: details)
        let text = switch resolvedFormat {
        case .markdown: ReportRenderer.markdown(report, options: reportOptions)
        case .html: ReportRenderer.html(report, options: reportOptions)
        }
        try Files.write(Array(text.utf8), to: output)
        if let output, output != "-" {
            Console.errLine("wrote the report (\(report.activityCount) activities) to \(output)")
        }
    }

    /// With --json: the counts per status per action line and overall.
    static func countsJSON(_ report: ProgrammeReport) -> JSONValue {
        func counts(_ c: StatusCounts) -> JSONValue {
            var object: [String: JSONValue] = ["none": .int(Int64(c.none)), "total": .int(Int64(c.total))]
            for s in ProgrammeStatus.allCases { object[s.rawValue] = .int(Int64(c[s])) }
            return .object(object)
        }
        let lines: [JSONValue] = report.actionLines.map { line in
            .object([
                "id": line.isUnplaced ? .null : .string(line.id),
                "number": line.number.map(JSONValue.int) ?? .null,
                "title": line.isUnplaced ? .null : .string(line.title),
                "results": .int(Int64(line.results.count)),
                "counts": counts(line.counts),
            ])
        }
        return .object(["actionLines": .array(lines), "counts": counts(report.counts)])
    }
}
