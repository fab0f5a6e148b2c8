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
            line = fields.map { key, value in
                let needsQuotes = value.isEmpty || value.contains { $0 == " " || $0 == "=" || $0 == "\"" || $0 == "\n" }
                return needsQuotes ? "\(key)=\(JSONValue.string(value).canonicalString)" : "\(key)=\(value)"
            }.joined(separator: " ")
        }
        line += "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}

