import Foundation
import Logging
import ProgSyncCore
import ProgSyncStore

/// Structured logs on stderr, one line per event, as logfmt or JSON.
public struct StructuredLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    let label: String
    let format: DaemonConfiguration.LogFormat

    public init(label: String, level: Logger.Level, format: DaemonConfiguration.LogFormat) {
        self.label = label
        self.logLevel = level
        self.format = format
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("time", Stamp.iso8601(milliseconds: Replica.wallClockMilliseconds())),
            ("level", event.level.rawValue), ("msg", event.message.description),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        var line: String
        switch format {
        case .json:
            line = JSONValue.object(Dictionary(fields.map { ($0.0, JSONValue.string($0.1)) }, uniquingKeysWith: { a, _ in a })).canonicalString
        case .logfmt:
            line = Self.logfmt(fields)
        }
        line += "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// One logfmt line. Values that come from requests or partners must not be able to start a
    /// line of their own or fake a field: every value with a space, `=`, a quote, a backslash, a
    /// control character (C0, DEL, C1 such as NEL) or a Unicode line or paragraph separator is
    /// quoted and escaped; in keys such characters become `_`.
    static func logfmt(_ fields: [(String, String)]) -> String {
        fields.map { key, value in "\(logfmtKey(key))=\(logfmtValue(value))" }.joined(separator: " ")
    }

    static func logfmtKey(_ key: String) -> String {
        let safe = String(String.UnicodeScalarView(key.unicodeScalars.map { isPlain($0) ? $0 : "_" }))
        return safe.isEmpty ? "_" : safe
    }

    static func logfmtValue(_ value: String) -> String {
        guard value.isEmpty || !value.unicodeScalars.allSatisfy(isPlain) else { return value }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where isPlain(scalar) || scalar == " " || scalar == "=": out.unicodeScalars.append(scalar)
            default:
                // Go's strconv.Quote forms, which logfmt readers undo.
                let hex = String(scalar.value, radix: 16), width = scalar.value > 0xFFFF ? 8 : 4
                out += (width == 8 ? "\\U" : "\\u") + String(repeating: "0", count: width - hex.count) + hex
            }
        }
        return out + "\""
    }

    /// A character that may stand unquoted in a logfmt value.
    private static func isPlain(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .lineSeparator, .paragraphSeparator, .spaceSeparator, .format: return false
        default: return scalar != "=" && scalar != "\"" && scalar != "\\"
        }
    }
}
