/// The seven states of the 2021 document's legend.
public enum ProgrammeStatus: String, Sendable, CaseIterable {
    case completed
    case ongoing
    case onTrack = "on-track"
    case delayed
    case notStarted = "not-started"
    case inConsultation = "in-consultation"
    case notApplicable = "not-applicable"

    public var dutchLabel: String {
        switch self {
        case .completed: "Voltooid"
        case .ongoing: "Doorlopend"
        case .onTrack: "In uitvoering en volgens planning"
        case .delayed: "In uitvoering maar met vertraging"
        case .notStarted: "Nog niet in uitvoering"
        case .inConsultation: "In (formele) consultatie"
        case .notApplicable: "Niet van toepassing"
        }
    }

    public var englishLabel: String {
        switch self {
        case .completed: "Completed"
        case .ongoing: "Ongoing"
        case .onTrack: "In progress, on schedule"
        case .delayed: "In progress, delayed"
        case .notStarted: "Not started yet"
        case .inConsultation: "In (formal) consultation"
        case .notApplicable: "Not applicable"
        }
    }

    public var symbol: String {
        switch self {
        case .completed: "✓"
        case .ongoing: "∞"
        case .onTrack: "📅"
        case .delayed: "📅⌚"
        case .notStarted: "🔄"
        case .inConsultation: "🗨️"
        case .notApplicable: "✗"
        }
    }

    /// Accepts the code, the Dutch or English label (any case), or the symbol.
    public init?(userInput: String) {
        let t = userInput.trimmingSpaces.lowercased()
        if let s = ProgrammeStatus(rawValue: t) {
            self = s
            return
        }
        guard let s = Self.allCases.first(where: {
            $0.dutchLabel.lowercased() == t || $0.englishLabel.lowercased() == t || $0.symbol == t
        }) else { return nil }
        self = s
    }

    public static var allowedCodes: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

public enum RecordKind: String, Sendable, CaseIterable {
    case actionLine = "action-line"
    case result
    case activity
    /// A funded project under an action line (schema 2: the 2023 recalibration's project budget).
    case project

    public var requiredFields: [String] {
        switch self {
        case .actionLine: ["number", "title"]
        case .result: ["actionLine", "number", "title"]
        case .activity: ["result", "number", "title"]
        case .project: ["actionLine", "number", "title"]
        }
    }

    /// The schema version that introduced this kind.
    public var schema: UInt32 { self == .project ? 2 : 1 }

    public static func known(in schema: UInt32) -> [RecordKind] { allCases.filter { $0.schema <= schema } }
}

/// A value or name the programme schema refuses; `field` and `message` say which and why.
public struct SchemaError: Error, CustomStringConvertible, Sendable, Equatable {
    public var field: String
    public var message: String
    public var description: String { "\(field): \(message)" }
    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }
}

/// The programme schema (§4), versioned. Version 1 is the 2021 programme; version 2 adds what the
/// 2023 recalibration needs: `closed` (an action line or result archived on a date; null reopens
/// it) and the kind `project`. A commit names the version it was written under; a node judges
/// it by that version when it knows it, and keeps it for later judgement when it does not
/// (`CommitRules.schemaGaps`). The evolution rule: a new version only adds fields, kinds and
/// values; it never refuses what an older version allowed. Version 3 adds the partnership's own
/// records (`Membership`: `org:<code>` and `node:<id>`), whose ids it reserves.
public enum ProgrammeSchema {
    /// The newest version this build knows.
    public static let current: UInt32 = 3
    public static let maxValueBytes = 16 * 1024
    public static let maxIDLength = 128

    static let fieldsV1: Set<String> = [
        "kind", "number", "title", "theme", "actionLine", "result", "status", "explanation",
        "owner", "partners", "due", "links", "deleted",
    ]
    static let fieldsV2: Set<String> = fieldsV1.union(["closed"])

    /// The fields of this build's newest schema.
    public static var fieldNames: Set<String> { fieldNames(in: current) }

    public static func fieldNames(in schema: UInt32) -> Set<String> { schema >= 2 ? fieldsV2 : fieldsV1 }

    public static func isValidRecordID(_ id: String) -> Bool {
        let bytes = id.utf8
        // "." and ".." would be path segments that HTTP clients remove.
        guard !bytes.isEmpty, bytes.count <= maxIDLength, id != ".", id != ".." else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: ":") || b == UInt8(ascii: "-")
        }
    }

    public static func isValidOrgCode(_ code: String) -> Bool {
        let bytes = code.utf8
        guard !bytes.isEmpty, bytes.count <= 64 else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x7A) || b == UInt8(ascii: "-")
        }
    }

    /// Checks one field change under a schema version; `null` clears an optional field.
    public static func validate(field: String, value: JSONValue, schema: UInt32 = current) throws(SchemaError) {
        try validate(field: field, value: value, canonicalSize: value.canonicalBytes.count, schema: schema)
    }

    public static func validate(field: String, value: JSONValue, canonicalSize: Int, schema: UInt32 = current) throws(SchemaError) {
        let names = fieldNames(in: schema)
        guard names.contains(field) else {
            throw SchemaError(field: field, message: "unknown field; allowed: \(names.sorted().joined(separator: ", "))")
        }
        if canonicalSize > maxValueBytes {
            throw SchemaError(field: field, message: "value larger than \(maxValueBytes) bytes")
        }
        switch field {
        case "kind":
            guard let s = value.stringValue, let kind = RecordKind(rawValue: s), kind.schema <= schema else {
                throw SchemaError(field: field, message: "must be one of: \(RecordKind.known(in: schema).map(\.rawValue).joined(separator: ", "))")
            }
        case "number":
            guard let n = value.intValue, n >= 1, n <= 9999 else {
                throw SchemaError(field: field, message: "must be a whole number from 1 to 9999")
            }
        case "title":
            guard let s = value.stringValue, s.contains(where: { !$0.isWhitespace }), s.utf8.count <= 1000 else {
                throw SchemaError(field: field, message: "must be a non-empty string of at most 1000 bytes")
            }
        case "theme", "explanation":
            guard value == .null || value.stringValue != nil else { throw SchemaError(field: field, message: "must be a string") }
        case "actionLine", "result":
            guard let s = value.stringValue, isValidRecordID(s) else {
                throw SchemaError(field: field, message: "must be a record id ([A-Za-z0-9._:-]{1,128})")
            }
        case "status":
            guard value == .null || (value.stringValue.flatMap(ProgrammeStatus.init(rawValue:)) != nil) else {
                throw SchemaError(field: field, message: "must be one of: \(ProgrammeStatus.allowedCodes)")
            }
        case "owner":
            guard let s = value.stringValue, isValidOrgCode(s) else {
                throw SchemaError(field: field, message: "must be an organisation code ([a-z0-9-]{1,64})")
            }
        case "partners":
            guard value == .null || (value.arrayValue?.allSatisfy({ $0.stringValue.map(isValidOrgCode) ?? false }) ?? false) else {
                throw SchemaError(field: field, message: "must be a list of organisation codes")
            }
        case "links":
            guard value == .null || (value.arrayValue?.allSatisfy({ $0.stringValue != nil }) ?? false) else {
                throw SchemaError(field: field, message: "must be a list of strings")
            }
        case "due", "closed":
            guard value == .null || (value.stringValue.map(isISODate) ?? false) else {
                throw SchemaError(field: field, message: "must be a date YYYY-MM-DD")
            }
        case "deleted":
            guard value.boolValue != nil else { throw SchemaError(field: field, message: "must be true or false") }
        default:
            break
        }
    }

    static func isISODate(_ s: String) -> Bool {
        // On the bytes: this runs for every `due` change merged.
        var s = s
        return s.withUTF8 { b in
            guard b.count == 10, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-") else { return false }
            for i in 0..<10 where i != 4 && i != 7 {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return false }
            }
            let month = Int(b[5] - 0x30) * 10 + Int(b[6] - 0x30)
            let day = Int(b[8] - 0x30) * 10 + Int(b[9] - 0x30)
            return (1...12).contains(month) && (1...31).contains(day)
        }
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
