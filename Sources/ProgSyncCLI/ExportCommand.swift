import ArgumentParser
import ProgSyncCore
import ProgSyncReport

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write records to a JSON or CSV file (the formats import reads).",
        discussion: """
            JSON is the sample format (records sorted by id, 2-space indent, UTF-8). CSV is what \
            Excel expects: UTF-8 with a byte order mark, CRLF line ends, columns \
            \(RecordFile.csvColumns.joined(separator: ",")). The basis column names the version \
            each value was exported from: keep it, so that an import writes only the cells you \
            edited and shows a conflict where a value changed here in the meantime. Text that \
            starts with = + - @ or ' gets a leading ' so a spreadsheet keeps it as text; the \
            import takes it off. Exporting, importing and exporting again gives the same bytes. \
            Deleted records are left out unless --deleted is given.

            Examples:
              progsync export -o programme.json
              progsync export --format csv -o acties.csv --kind activity
              progsync export --owner politie > politie.json
            """
    )

    @OptionGroup var options: GlobalOptions
    @OptionGroup(title: "Filters") var filters: RecordFilterOptions

    @Option(help: "json or csv (default: from the output file's extension, else json).")
    var format: RecordFileFormat?

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp("Write to this file instead of stdout.", valueName: "file"))
    var output: String?

    var resolvedFormat: RecordFileFormat { format ?? output.flatMap(RecordFileFormat.init(path:)) ?? .json }

    func run() async throws {
        let api = try options.api()
        var progress = Progress(enabled: output != nil && output != "-")
        // A CSV names the version of each value it holds, so that importing it writes only what was edited.
        let basis = resolvedFormat == .csv ? [("basis", "true")] : []
        let values = try await api.allRecords(query: filters.queryItems + basis) { done, total in
            if total >= 2000 { progress.update("fetching \(done)/\(total) records") }
        }
        let records = values.compactMap(FlatRecord.init(apiRecord:))
        let bytes: [UInt8] = switch resolvedFormat {
        case .json: Array(RecordFile.exportJSON(records).utf8)
        case .csv: RecordFile.exportCSV(records)
        }
        try Files.write(bytes, to: output)
        if let output, output != "-" {
            if options.json {
                let summary: JSONValue = [
                    "records": .int(Int64(records.count)), "file": .string(output),
                    "format": .string(resolvedFormat.rawValue), "bytes": .int(Int64(bytes.count)),
                ]
                Console.outLine(summary.prettyString())
            } else {
                progress.line("exported \(records.count) records to \(output)")
                if !progress.enabled { Console.errLine("exported \(records.count) records to \(output)") }
            }
        }
    }
}
