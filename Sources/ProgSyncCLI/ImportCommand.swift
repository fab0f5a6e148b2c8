import ArgumentParser
import ProgSyncCore

extension RecordFileFormat: ExpressibleByArgument {}

struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Load records from a JSON or CSV file, all or nothing.",
        discussion: """
            JSON: the sample format {"format": "progsync-records/1", "records": [...]} or a bare \
            array of flat records ({"id": …, "kind": …, <fields>}).
            CSV: a header row of field names with id first (as progsync export writes it); \
            quoted fields, doubled quotes, CRLF and a UTF-8 byte order mark are accepted; \
            partners and links are separated by "; "; an empty cell leaves the field out. \
            A ;-separated file (Excel with Dutch settings) is recognised.

            The whole file is checked first; problems are listed as FILE:LINE: message and \
            nothing is sent. Otherwise every record is sent in one request, and the daemon \
            applies all or none of it.

            Only cells that differ are written. A CSV from progsync export carries a basis \
            column (the version each value was exported from): a cell you edited whose field \
            was also changed on this node since the export is written as a conflict, kept next \
            to the newer value (see progsync conflicts list), never over it. A file without \
            a basis column writes every cell that differs from this node's value.

            Examples:
              progsync import programme-2021.json
              progsync import acties.csv
              progsync import --dry-run export.csv
              cat records.json | progsync import - --format json
            """
    )

    @OptionGroup var options: GlobalOptions

    @Argument(help: "The file to load (- reads stdin).")
    var file: String

    @Option(help: "json or csv (default: from the file's extension).")
    var format: RecordFileFormat?

    @Flag(name: .customLong("dry-run"), help: "Only check the file; send nothing.")
    var dryRun = false

    static let maxBodyBytes = 64 * 1024 * 1024
    static let largeFileBytes = 1024 * 1024
    static let maxIssuesShown = 100

    var resolvedFormat: RecordFileFormat? { format ?? RecordFileFormat(path: file) }

    func validate() throws {
        if resolvedFormat == nil {
            throw ValidationError("cannot tell the format of '\(file)' from its name; add --format json or --format csv")
        }
    }

    func run() async throws {
        let format = resolvedFormat!
        let bytes = try Files.read(file)
        let name = file == "-" ? "<stdin>" : file
        var progress = Progress(enabled: bytes.count >= Self.largeFileBytes)
        progress.update("reading \(name)…")
        let parsed = RecordFile.parse(bytes, format: format) { done, total in
            progress.update("parsing \(done)/\(total) records")
        }
        if !parsed.issues.isEmpty {
            progress.line("parsed \(parsed.records.count) records")
            var lines = parsed.issues.prefix(Self.maxIssuesShown).map { $0.formatted(file: name) }
            if parsed.issues.count > Self.maxIssuesShown {
                lines.append("… and \(parsed.issues.count - Self.maxIssuesShown) more")
            }
            let count = parsed.issues.count
            lines.append("error: \(count) problem\(count == 1 ? "" : "s") in \(name); nothing was sent")
            if parsed.issues.contains(where: { $0.message.contains("unknown status") }) {
                lines.append(FieldInput.statusChoices)
            }
            Console.errLine(lines.joined(separator: "\n"))
            throw ExitCode.failure
        }
        guard !parsed.records.isEmpty else { throw CLIError.failure("\(name) holds no records; nothing was sent") }
        progress.line("parsed \(parsed.records.count) records")
        if dryRun {
            Console.outLine("\(name): \(parsed.records.count) records, no problems found (dry run: nothing sent)")
            return
        }
        let body = RecordFile.importBody(parsed.records).canonicalBytes
        guard body.count <= Self.maxBodyBytes else {
            throw CLIError.failure("\(name) is too large for one import (\(body.count / 1_048_576) MiB of JSON; the limit is 64 MiB); split it into smaller files")
        }
        progress.line("sending \(parsed.records.count) records…")
        let api = try LocalAPIClient(socketPath: options.socketPath, requestTimeout: .seconds(1800))
        let response = try await api.raw("POST", "/v1/import", body: body)
        let result = try LocalAPIClient.decode(response)
        if options.json {
            Console.outLine(result.prettyString())
        } else {
            Console.outLine(Self.summary(result, file: name).joined(separator: "\n"))
        }
    }

    /// The lines printed for an import answer: cells changed and unchanged, each collision,
    /// and a note when (some) rows had no basis.
    static func summary(_ result: JSONValue, file name: String) -> [String] {
        let records = result["records"]?.intValue ?? 0
        let collisions = result["collisions"]?.arrayValue ?? []
        var lines = [
            "imported \(HumanFormat.int(result["records"])) records from \(name): "
                + "\(HumanFormat.int(result["changed"])) cells changed, \(HumanFormat.int(result["unchanged"])) unchanged, "
                + "\(collisions.count) collided with newer edits (\(HumanFormat.int(result["commits"])) commits)"
        ]
        for c in collisions {
            let cell = "\(c["record"]?.stringValue ?? "?") \(c["field"]?.stringValue ?? "?")"
            lines.append(
                c["outcome"]?.stringValue == "conflict"
                    ? "  \(cell): changed here since the export; both values kept as a conflict (progsync conflicts list)"
                    : "  \(cell): set here since the export (it was empty); the file's value was not imported")
        }
        switch result["withBasis"]?.intValue ?? 0 {
        case 0:
            lines.append("note: \(name) names no basis (a CSV from progsync export does, in its basis column): every cell that differs from this node's value was written")
        case let n where n < records:
            lines.append("note: \(records - n) rows had no basis (added by hand): their cells were written where they differ from this node's value")
        default:
            break
        }
        return lines
    }
}
