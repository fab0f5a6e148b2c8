import ProgSyncCore
import ProgSyncReport

/// Why a `field=value` argument (or a cell of an import file) was refused.
public struct FieldInputError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Turns what a person types into the JSON values the daemon accepts.
///
/// - `status` accepts the code, the Dutch or English label or the symbol and becomes the code;
/// - `number` becomes an integer; `partners`/`links` comma-separated lists; `deleted` a bool;
/// - an empty value or `null` clears the field; `field:=<json>` takes raw JSON.
public enum FieldInput {
    /// Fields holding a list of strings.
    public static let listFields: Set<String> = ["partners", "links"]

    /// The schema's field name for `name`, matched without regard to case, `-` or `_`
    /// (`action-line` and `actionline` give `actionLine`).
    public static func fieldName(_ name: String) throws(FieldInputError) -> String {
        if ProgrammeSchema.fieldNames.contains(name) { return name }
        let folded = fold(name)
        if let match = ProgrammeSchema.fieldNames.first(where: { fold($0) == folded }) { return match }
        throw FieldInputError(
            "unknown field '\(name)'; fields are: \(ProgrammeSchema.fieldNames.sorted().joined(separator: ", "))"
        )
    }

    private static func fold(_ name: String) -> String {
        String(name.lowercased().filter { $0 != "-" && $0 != "_" })
    }

    /// Parses `field=value` or `field:=<json>`.
    public static func parseAssignment(_ text: String) throws(FieldInputError) -> (field: String, value: JSONValue) {
        guard let equals = text.firstIndex(of: "=") else {
            throw FieldInputError("'\(text)' is not field=value (e.g. status=completed, title=\"New title\", owner=)")
        }
        var name = String(text[..<equals])
        let rawText = String(text[text.index(after: equals)...])
        var isJSON = false
        if name.hasSuffix(":") {
            name.removeLast()
            isJSON = true
        }
        guard !name.isEmpty else { throw FieldInputError("'\(text)' has no field name before '='") }
        let field = try fieldName(name)
        let value: JSONValue
        if isJSON {
            do {
                value = try JSONParser.parse(rawText, maxDepth: 16)
            } catch {
                throw FieldInputError("\(field):= needs a JSON value: \(error.description)")
            }
            return (field, try normalise(field: field, value: value))
        }
        value = try parseValue(rawText, field: field)
        return (field, value)
    }

    /// Parses the text after `=` for `field`. An empty text or `null` clears the field.
    public static func parseValue(_ text: String, field: String) throws(FieldInputError) -> JSONValue {
        let trimmed = text.trimmingWhitespace
        if trimmed.isEmpty || trimmed == "null" { return .null }
        let value: JSONValue
        switch field {
        case "status":
            value = .string(try status(trimmed).rawValue)
        case "number":
            guard let n = Int64(trimmed) else {
                throw FieldInputError("number must be a whole number, not '\(text)'")
            }
            value = .int(n)
        case "partners", "links":
            value = .array(splitList(trimmed, separator: ",").map(JSONValue.string))
        case "deleted":
            guard let b = bool(trimmed) else {
                throw FieldInputError("deleted must be true or false, not '\(text)'")
            }
            value = .bool(b)
        case "kind", "owner", "actionLine", "result", "due":
            value = .string(trimmed)
        default:
            value = .string(text)
        }
        return try checked(field: field, value: value)
    }

    /// A raw JSON value, with a status label mapped to its code, then checked by the schema.
    public static func normalise(field: String, value: JSONValue) throws(FieldInputError) -> JSONValue {
        if field == "status", let s = value.stringValue {
            return .string(try status(s).rawValue)
        }
        return try checked(field: field, value: value)
    }

    static func checked(field: String, value: JSONValue) throws(FieldInputError) -> JSONValue {
        do {
            try ProgrammeSchema.validate(field: field, value: value)
        } catch {
            throw FieldInputError(error.description)
        }
        return value
    }

    /// The status for a code, Dutch or English label (any case) or symbol.
    public static func status(_ text: String) throws(FieldInputError) -> ProgrammeStatus {
        if let s = ProgrammeStatus(userInput: text) { return s }
        // A symbol typed without its variation selector (🗨 for 🗨️) or with spaces around it.
        let stripped = String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.value != 0xFE0F }))
            .trimmingWhitespace
        if let s = ProgrammeStatus.allCases.first(where: {
            String(String.UnicodeScalarView($0.symbol.unicodeScalars.filter { $0.value != 0xFE0F })) == stripped
        }) {
            return s
        }
        throw FieldInputError("unknown status '\(text)'\n" + statusChoices)
    }

    /// The seven codes with their symbol and Dutch label, for error messages and help.
    public static var statusChoices: String {
        var lines = ["use one of these codes (or its Dutch or English label, or its symbol):"]
        let width = ProgrammeStatus.allCases.map { $0.rawValue.count }.max() ?? 0
        for s in ProgrammeStatus.allCases {
            let code = TextTable.pad(s.rawValue, to: width)
            let symbol = TextTable.pad(s.symbol, to: 4)
            lines.append("  \(code)  \(symbol)  \(s.dutchLabel)")
        }
        return lines.joined(separator: "\n")
    }

    /// Splits a list cell; items are trimmed and empty items dropped.
    public static func splitList(_ text: String, separator: Character) -> [String] {
        text.split(separator: separator, omittingEmptySubsequences: false)
            .map { String($0).trimmingWhitespace }
            .filter { !$0.isEmpty }
    }

    public static func bool(_ text: String) -> Bool? {
        switch text.trimmingWhitespace.lowercased() {
        case "true", "yes", "ja", "1", "y": true
        case "false", "no", "nee", "0", "n": false
        default: nil
        }
    }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
