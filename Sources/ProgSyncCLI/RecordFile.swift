import ProgSyncCore
import ProgSyncReport

/// The import and export file formats.
public enum RecordFileFormat: String, Sendable, CaseIterable {
    case json
    case csv

    /// From the file name's extension (`.json`, `.csv`), if it says.
    public init?(path: String) {
        let lower = path.lowercased()
        if lower.hasSuffix(".json") {
            self = .json
        } else if lower.hasSuffix(".csv") {
            self = .csv
        } else {
            return nil
        }
    }
}

/// One problem found in an import file, with the 1-based line it is on.
public struct ImportIssue: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    public var description: String { "line \(line): \(message)" }

    /// `FILE:LINE: message`, as compilers print it.
    public func formatted(file: String) -> String { "\(file):\(line): \(message)" }
}

/// What reading an import file gave: the records (with their lines) and every problem found.
/// Nothing is sent unless `issues` is empty.
public struct ImportParseResult: Sendable {
    public var records: [FlatRecord]
    public var lines: [Int]
    public var issues: [ImportIssue]
}

/// Reading and writing record files: the sample JSON format (`progsync-records/1`) and CSV.
public enum RecordFile {
    public static let formatName = "progsync-records/1"

    /// Field order in JSON files (the sample file's order).
    public static let fieldOrder = [
        "kind", "actionLine", "result", "number", "title", "theme", "status", "explanation",
        "owner", "partners", "due", "links", "deleted",
    ]

    /// CSV columns, in order. The last, `basis`, is not a field: it names the version each
    /// value was exported from (see `basisCell`).
    public static let csvColumns = [
        "id", "kind", "actionLine", "result", "number", "title", "theme", "status", "owner",
        "partners", "due", "links", "explanation", "deleted", basisColumn,
    ]

    public static let basisColumn = "basis"

    /// List items in a CSV cell are joined with this.
    public static let csvListSeparator = "; "

    static func byteOrder(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    // MARK: Export

    /// The sample format: flat records sorted by id, 2-space indent, UTF-8 text (nothing
    /// ASCII-escaped), `deleted` left out when false, ending with a newline.
    public static func exportJSON(_ records: [FlatRecord]) -> String {
        let sorted = records.sorted { byteOrder($0.id, $1.id) }
        var out = "{\n  \"format\": \(JSONValue.string(formatName).canonicalString),\n"
        guard !sorted.isEmpty else { return out + "  \"records\": []\n}\n" }
        out += "  \"records\": [\n"
        for (i, record) in sorted.enumerated() {
            var lines = ["      \"id\": " + JSONValue.string(record.id).canonicalString]
            for name in record.orderedFieldNames {
                guard let value = record.fields[name], value != .null else { continue }
                if name == "deleted", value == .bool(false) { continue }
                lines.append("      " + JSONValue.string(name).canonicalString + ": " + value.prettyString(indent: 3))
            }
            out += "    {\n" + lines.joined(separator: ",\n") + "\n    }" + (i == sorted.count - 1 ? "\n" : ",\n")
        }
        return out + "  ]\n}\n"
    }

    /// CSV for Excel: UTF-8 with a byte order mark, CRLF line ends, the columns of
    /// ``csvColumns``, records sorted by id. Every cell is `CSV.guarded`, so text that starts
    /// like a formula stays text in a spreadsheet.
    public static func exportCSV(_ records: [FlatRecord]) -> [UInt8] {
        let sorted = records.sorted { byteOrder($0.id, $1.id) }
        var text = CSV.line(csvColumns)
        for record in sorted {
            text += CSV.line(csvColumns.map { column in
                let cell = switch column {
                case "id": record.id
                case basisColumn: basisCell(record.basis)
                default: csvCell(record.fields[column], field: column)
                }
                return CSV.guarded(cell)
            })
        }
        return CSV.byteOrderMark + Array(text.utf8)
    }

    /// The basis column's cell: each version once, with the fields it holds, as
    /// `origin/seq:field,field origin/seq:field` (fields in column order). It starts with a
    /// letter or digit and holds `/` and `:` between letters, so no spreadsheet takes it for a
    /// number, date or formula.
    public static func basisCell(_ basis: [String: String]?) -> String {
        guard let basis else { return "" }
        func rank(_ field: String) -> Int { csvColumns.firstIndex(of: field) ?? csvColumns.count }
        let fields = basis.keys.sorted { (rank($0), $0) < (rank($1), $1) }
        var groups: [(ref: String, fields: [String])] = []
        for field in fields {
            let ref = basis[field]!
            if let i = groups.firstIndex(where: { $0.ref == ref }) {
                groups[i].fields.append(field)
            } else {
                groups.append((ref, [field]))
            }
        }
        return groups.map { "\($0.ref):\($0.fields.joined(separator: ","))" }.joined(separator: " ")
    }

    /// Reads a basis cell back; nil for an empty cell (a row added by hand).
    public static func basis(fromCell cell: String) throws(FieldInputError) -> [String: String]? {
        let text = cell.trimmingWhitespace
        guard !text.isEmpty else { return nil }
        var basis: [String: String] = [:]
        for group in text.split(separator: " ") {
            let parts = group.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, CommitRef(text: parts[0]) != nil else {
                throw FieldInputError("the basis cell is damaged (\"\(group.prefix(60))\" is not origin/seq:fields); clear it to import the row without a basis")
            }
            for field in parts[1].split(separator: ",") {
                guard ProgrammeSchema.fieldNames.contains(String(field)), basis[String(field)] == nil else {
                    throw FieldInputError("the basis cell is damaged (field \"\(field.prefix(60))\"); clear it to import the row without a basis")
                }
                basis[String(field)] = String(parts[0])
            }
        }
        return basis
    }

    /// The text of one CSV cell.
    public static func csvCell(_ value: JSONValue?, field: String) -> String {
        guard let value else { return "" }
        switch value {
        case .null: return ""
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double: return value.canonicalString
        case .bool(let b): return field == "deleted" ? (b ? "true" : "") : (b ? "true" : "false")
        case .array(let items):
            return items.map { $0.stringValue ?? $0.canonicalString }.joined(separator: csvListSeparator)
        case .object: return value.canonicalString
        }
    }

    /// The body of `POST /v1/import`.
    public static func importBody(_ records: [FlatRecord]) -> JSONValue {
        .object(["records": .array(records.map(\.flatJSON))])
    }

    // MARK: Import

    /// Reads an import file in the given format.
    public static func parse(
        _ bytes: [UInt8],
        format: RecordFileFormat,
        progress: ((Int, Int) -> Void)? = nil
    ) -> ImportParseResult {
        switch format {
        case .json: parseJSON(bytes, progress: progress)
        case .csv: parseCSV(bytes, progress: progress)
        }
    }

    /// The sample format `{"format": "progsync-records/1", "records": [...]}` or a bare array of
    /// flat records. Status labels and symbols become codes.
    public static func parseJSON(_ bytes: [UInt8], progress: ((Int, Int) -> Void)? = nil) -> ImportParseResult {
        var input = bytes
        if input.starts(with: CSV.byteOrderMark) { input.removeFirst(3) }
        let root: JSONValue
        do {
            root = try JSONParser.parse(input, maxDepth: 64)
        } catch {
            let line = lineNumber(in: input, at: error.offset)
            return ImportParseResult(records: [], lines: [], issues: [ImportIssue(line: line, message: "not valid JSON: \(error.message)")])
        }
        let items: [JSONValue]
        switch root {
        case .array(let a):
            items = a
        case .object(let o):
            if let format = o["format"], format != .string(formatName) {
                return failure(line: 1, "unsupported format \(format.canonicalString); expected \"\(formatName)\"")
            }
            guard let a = o["records"]?.arrayValue else {
                return failure(line: 1, "expected {\"format\": \"\(formatName)\", \"records\": [...]} or an array of records")
            }
            items = a
        default:
            return failure(line: 1, "expected {\"format\": \"\(formatName)\", \"records\": [...]} or an array of records")
        }
        let lines = elementLines(in: input, rootIsArray: root.arrayValue != nil)
        var records: [FlatRecord] = []
        var recordLines: [Int] = []
        var issues: [ImportIssue] = []
        for (i, item) in items.enumerated() {
            if let progress, i % 1000 == 0 { progress(i, items.count) }
            let line = i < lines.count ? lines[i] : 1
            guard var object = item.objectValue else {
                issues.append(ImportIssue(line: line, message: "a record must be a JSON object"))
                continue
            }
            guard let id = object.removeValue(forKey: "id")?.stringValue else {
                issues.append(ImportIssue(line: line, message: "record has no \"id\" string"))
                continue
            }
            var fields: [String: JSONValue] = [:]
            for name in object.keys.sorted(by: byteOrder) {
                let value = object[name]!
                guard ProgrammeSchema.fieldNames.contains(name) else {
                    issues.append(ImportIssue(line: line, message: "record \(id): unknown field \"\(name)\"; fields are: \(ProgrammeSchema.fieldNames.sorted().joined(separator: ", "))"))
                    continue
                }
                if value == .null { continue }
                do {
                    fields[name] = try FieldInput.normalise(field: name, value: value)
                } catch {
                    issues.append(ImportIssue(line: line, message: "record \(id): \(shortened(error.message))"))
                }
            }
            records.append(FlatRecord(id: id, fields: fields))
            recordLines.append(line)
        }
        progress?(items.count, items.count)
        issues += checkRecords(records, lines: recordLines)
        return ImportParseResult(records: records, lines: recordLines, issues: issues.sorted { $0.line < $1.line })
    }

    /// CSV with a header row of field names, `id` first. Empty cells leave the field out; list
    /// cells are split on `;` (partners also on `,`); status labels and symbols become codes.
    public static func parseCSV(_ bytes: [UInt8], progress: ((Int, Int) -> Void)? = nil) -> ImportParseResult {
        let rows: [CSVRow]
        do {
            rows = try CSV.parse(bytes)
        } catch {
            return failure(line: error.line, error.message)
        }
        guard let header = rows.first else { return failure(line: 1, "the file is empty; the first line must name the columns, starting with id") }
        var columns: [String] = []
        var issues: [ImportIssue] = []
        for (i, rawName) in header.fields.enumerated() {
            let name = rawName.trimmingWhitespace
            if i > 0, name.lowercased() == basisColumn, !columns.contains(basisColumn) {
                columns.append(basisColumn)
                continue
            }
            if i == 0 {
                if name.lowercased() != "id" {
                    issues.append(ImportIssue(line: header.line, message: "the first column must be \"id\", not \"\(name)\""))
                }
                columns.append("id")
                continue
            }
            guard let field = try? FieldInput.fieldName(name) else {
                issues.append(ImportIssue(line: header.line, message: "unknown column \"\(name)\"; columns are: id, \(csvColumns.dropFirst().joined(separator: ", "))"))
                columns.append("")
                continue
            }
            if columns.contains(field) {
                issues.append(ImportIssue(line: header.line, message: "column \"\(field)\" appears twice"))
            }
            columns.append(field)
        }
        guard issues.isEmpty else { return ImportParseResult(records: [], lines: [], issues: issues) }
        // The basis column marks a file progsync exported: only then do cells carry guards.
        let exported = columns.contains(basisColumn)

        var records: [FlatRecord] = []
        var recordLines: [Int] = []
        let dataRows = rows.dropFirst()
        for (n, row) in dataRows.enumerated() {
            if let progress, n % 1000 == 0 { progress(n, dataRows.count) }
            if row.fields.allSatisfy({ $0.trimmingWhitespace.isEmpty }) { continue }
            if row.fields.count > columns.count, row.fields[columns.count...].contains(where: { !$0.trimmingWhitespace.isEmpty }) {
                issues.append(ImportIssue(line: row.line, message: "this row has \(row.fields.count) cells but the header names \(columns.count) columns"))
                continue
            }
            let cells = exported ? row.fields.map(CSV.unguarded) : row.fields
            let id = cells[0].trimmingWhitespace
            guard !id.isEmpty else {
                issues.append(ImportIssue(line: row.line, message: "the id cell is empty"))
                continue
            }
            var fields: [String: JSONValue] = [:]
            var basis: [String: String]?
            for (i, field) in columns.enumerated().dropFirst() where i < cells.count {
                let cell = cells[i]
                guard !cell.isEmpty else { continue }
                do {
                    if field == basisColumn {
                        basis = try Self.basis(fromCell: cell)
                    } else if let value = try csvValue(cell, field: field) {
                        fields[field] = value
                    }
                } catch {
                    issues.append(ImportIssue(line: row.line, message: "record \(id): \(shortened(error.message))"))
                }
            }
            records.append(FlatRecord(id: id, fields: fields, basis: basis))
            recordLines.append(row.line)
        }
        progress?(dataRows.count, dataRows.count)
        issues += checkRecords(records, lines: recordLines)
        return ImportParseResult(records: records, lines: recordLines, issues: issues.sorted { $0.line < $1.line })
    }

    /// The value of one non-empty CSV cell, or nil when it leaves the field out.
    public static func csvValue(_ cell: String, field: String) throws(FieldInputError) -> JSONValue? {
        let trimmed = cell.trimmingWhitespace
        let value: JSONValue
        switch field {
        case "number":
            guard let n = Int64(trimmed) else { throw FieldInputError("number must be a whole number, not \"\(cell)\"") }
            value = .int(n)
        case "partners":
            let items = FieldInput.splitList(trimmed, separator: ";").flatMap { FieldInput.splitList($0, separator: ",") }
            guard !items.isEmpty else { return nil }
            value = .array(items.map(JSONValue.string))
        case "links":
            let items = FieldInput.splitList(trimmed, separator: ";")
            guard !items.isEmpty else { return nil }
            value = .array(items.map(JSONValue.string))
        case "deleted":
            guard let b = FieldInput.bool(trimmed) else { throw FieldInputError("deleted must be true or false, not \"\(cell)\"") }
            value = .bool(b)
        case "status":
            value = .string(try FieldInput.status(trimmed).rawValue)
        case "kind", "owner", "actionLine", "result", "due":
            guard !trimmed.isEmpty else { return nil }
            value = .string(trimmed)
        default:
            value = .string(cell)
        }
        return try FieldInput.checked(field: field, value: value)
    }

    /// Checks that concern whole records: the id, the kind and its required fields, duplicates.
    static func checkRecords(_ records: [FlatRecord], lines: [Int]) -> [ImportIssue] {
        var issues: [ImportIssue] = []
        var seen: [String: Int] = [:]
        for (record, line) in zip(records, lines) {
            guard ProgrammeSchema.isValidRecordID(record.id) else {
                issues.append(ImportIssue(line: line, message: "invalid record id \"\(record.id)\" (use 1–128 of A–Z a–z 0–9 . _ : -)"))
                continue
            }
            if let first = seen[record.id] {
                issues.append(ImportIssue(line: line, message: "record \(record.id) appears twice (first on line \(first))"))
            } else {
                seen[record.id] = line
            }
            guard let kindValue = record.fields["kind"] else {
                issues.append(ImportIssue(line: line, message: "record \(record.id): kind is missing (\(RecordKind.allCases.map(\.rawValue).joined(separator: ", ")))"))
                continue
            }
            guard let kind = kindValue.stringValue.flatMap(RecordKind.init(rawValue:)) else { continue }  // reported per field
            let missing = kind.requiredFields.filter { record.fields[$0] == nil }
            if !missing.isEmpty {
                let article = kind == .result ? "a" : "an"
                issues.append(ImportIssue(line: line, message: "record \(record.id): \(article) \(kind.rawValue) needs \(missing.joined(separator: ", "))"))
            }
        }
        return issues
    }

    /// A status error's first line, with the codes on the same line (for per-line reports).
    static func shortened(_ message: String) -> String {
        guard message.contains("\n") else { return message }
        let first = message.split(separator: "\n").first.map(String.init) ?? message
        if first.hasPrefix("unknown status") {
            return first + "; use a code (\(ProgrammeStatus.allowedCodes)) or its Dutch or English label or symbol"
        }
        return first
    }

    static func failure(line: Int, _ message: String) -> ImportParseResult {
        ImportParseResult(records: [], lines: [], issues: [ImportIssue(line: line, message: message)])
    }

    /// The 1-based line of byte `offset`.
    static func lineNumber(in bytes: [UInt8], at offset: Int) -> Int {
        1 + bytes.prefix(min(offset, bytes.count)).reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
    }

    /// The line on which each element of the records array starts: the root array, or the
    /// root object's `"records"` array. `bytes` must be valid JSON.
    static func elementLines(in bytes: [UInt8], rootIsArray: Bool) -> [Int] {
        struct Frame {
            var isObject: Bool
            var isTarget: Bool
            var expectingKey: Bool
            var lastKey: [UInt8] = []
        }
        var stack: [Frame] = []
        var lines: [Int] = []
        var line = 1
        var i = 0
        let recordsKey = Array("records".utf8)

        func valueStarts(_ stack: inout [Frame]) {
            if let top = stack.last, top.isTarget { lines.append(line) }
        }

        while i < bytes.count {
            let b = bytes[i]
            switch b {
            case 0x0A:
                line += 1
                i += 1
            case 0x20, 0x09, 0x0D, UInt8(ascii: ":"):
                i += 1
            case UInt8(ascii: ","):
                if let top = stack.indices.last, stack[top].isObject { stack[top].expectingKey = true }
                i += 1
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                valueStarts(&stack)
                let isObject = b == UInt8(ascii: "{")
                var isTarget = false
                if !isObject {
                    if stack.isEmpty {
                        isTarget = rootIsArray
                    } else if stack.count == 1, stack[0].isObject, stack[0].lastKey == recordsKey {
                        isTarget = !rootIsArray
                    }
                }
                stack.append(Frame(isObject: isObject, isTarget: isTarget, expectingKey: isObject))
                i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                stack.removeLast()
                i += 1
            case UInt8(ascii: "\""):
                let start = i + 1
                i += 1
                while i < bytes.count, bytes[i] != UInt8(ascii: "\"") {
                    i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1
                }
                if let top = stack.indices.last, stack[top].isObject, stack[top].expectingKey {
                    stack[top].lastKey = Array(bytes[start..<min(i, bytes.count)])
                    stack[top].expectingKey = false
                } else {
                    valueStarts(&stack)
                }
                i += 1
            default:
                valueStarts(&stack)
                while i < bytes.count, !"\t\n\r ,]}".utf8.contains(bytes[i]) { i += 1 }
            }
        }
        return lines
    }
}

extension FlatRecord {
    /// Fields in the order files use: the schema's order, then any other field by name.
    public var orderedFieldNames: [String] {
        let known = RecordFile.fieldOrder.filter { fields[$0] != nil }
        let others = fields.keys.filter { !RecordFile.fieldOrder.contains($0) }.sorted(by: RecordFile.byteOrder)
        return known + others
    }
}
