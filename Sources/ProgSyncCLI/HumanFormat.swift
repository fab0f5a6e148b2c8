import ProgSyncCore
import ProgSyncReport

/// Human-readable text for the daemon's answers. Pure: JSON in, text out.
public enum HumanFormat {
    /// Titles are cut to this many cells when the terminal width is unknown.
    public static let defaultTitleWidth = 60

    // MARK: Values

    /// A field value for people: strings as they are, lists joined with ", ", the rest as JSON.
    public static func valueText(_ value: JSONValue?) -> String {
        guard let value else { return "" }
        switch value {
        case .null: return "—"
        case .string(let s): return s
        case .array(let items) where items.allSatisfy({ $0.stringValue != nil }):
            return items.compactMap(\.stringValue).joined(separator: ", ")
        default: return value.canonicalString
        }
    }

    /// `✓ completed`; the raw text for an unknown code; empty when absent.
    public static func statusCell(_ value: JSONValue?) -> String {
        guard let text = value?.stringValue else { return "" }
        guard let status = ProgrammeStatus(rawValue: text) else { return text }
        return "\(status.symbol) \(status.rawValue)"
    }

    /// `2024-05-01T10:00:00.123Z` → `2024-05-01 10:00:00Z`.
    public static func shortTime(_ iso: String?) -> String {
        guard let iso, !iso.isEmpty else { return "" }
        var s = iso.replacingFirst("T", with: " ")
        if let dot = s.firstIndex(of: ".") {
            var end = s.index(after: dot)
            while end < s.endIndex, s[end].isNumber { end = s.index(after: end) }
            s.removeSubrange(dot..<end)
        }
        return s
    }

    /// Cuts a one-line rendering of `text` to `max` cells.
    public static func shorten(_ text: String, to max: Int) -> String {
        TextTable.truncate(TextTable.singleLine(text), to: max)
    }

    static func int(_ value: JSONValue?) -> String {
        guard let value else { return "0" }
        if let i = value.intValue { return String(i) }
        return valueText(value)
    }

    // MARK: Status

    public static func status(_ v: JSONValue, width: Int? = nil) -> String {
        var lines: [String] = []
        var node = v["node"]?.stringValue ?? "?"
        if let name = v["name"]?.stringValue, !name.isEmpty { node += " (\(name))" }
        let records = v["records"]
        let rows: [(String, String)] = [
            ("node", node),
            ("org", v["org"]?.stringValue ?? ""),
            ("clock", (v["clock"]?.stringValue ?? "") + (v["time"]?.stringValue.map { "  (\(shortTime($0)))" } ?? "")),
            (
                "records",
                "\(int(records?["total"])) total: \(int(records?["action-line"])) action lines, "
                    + "\(int(records?["result"])) results, \(int(records?["activity"])) activities, "
                    + "\(int(records?["deleted"])) deleted"
            ),
            ("conflicts", int(v["conflicts"])),
            ("held", int(v["held"]) + "  (quarantine)"),
            ("rejected", int(v["rejected"])),
            ("digest", v["digest"]?.stringValue ?? ""),
        ]
        let labelWidth = rows.map(\.0.count).max() ?? 0
        for (label, value) in rows {
            lines.append(TextTable.pad(label, to: labelWidth) + "  " + value)
        }
        if let wait = v["catchingUp"] {
            let partners = (wait["waitingFor"]?.arrayValue ?? []).compactMap(\.stringValue)
            lines.append("")
            lines.append("LOCAL WRITES WAIT: restored from a backup \(shortTime(wait["restoredAt"]?.stringValue)); own chain at "
                + "\(int(wait["ownSeq"])), partners hold \(int(wait["heldByPartners"]))"
                + (partners.isEmpty ? "" : "; waiting for \(partners.joined(separator: ", "))") + " (`progsync resume-writes` ends the wait)")
        }
        if let c = v["connectivity"] {
            lines.append("")
            if c["online"]?.boolValue == true {
                lines.append("online: \(int(c["peersUp"])) of \(int(c["peersConfigured"])) partners connected")
            } else if c["peersConfigured"]?.intValue == 0, c["waiting"]?.arrayValue?.isEmpty ?? true {
                // No partner in the registry at all: nothing is unreachable, so not OFFLINE.
                lines.append("no partners configured (standalone)")
            } else {
                let since = c["lastContact"]?.stringValue.map { "; last contact \(shortTime($0))" } ?? "; no partner reached yet"
                lines.append("OFFLINE: no partner reachable\(since). Local changes are kept and replicate when a partner is reachable again.")
            }
            let waiting = c["waiting"]?.arrayValue ?? []
            if !waiting.isEmpty {
                lines.append("commits waiting for each partner (by the last version vector it told us)")
                var table = TextTable(headers: ["PARTNER", "ORG", "COMMITS", "KNOWN AS OF"])
                for w in waiting {
                    table.append([valueText(w["name"]), valueText(w["org"]), int(w["commits"]),
                                  w["knownAsOf"]?.stringValue.map(shortTime) ?? "never"])
                }
                lines.append(indent(table.render(), by: 2))
            }
        }
        if let versions = v["versions"] {
            lines.append("")
            lines.append("schema \(int(versions["schema"])) (this build knows up to \(int(versions["newestSchema"]))), peer protocol \(valueText(versions["protocol"]))")
            for note in versions["notes"]?.arrayValue ?? [] { lines.append("  " + valueText(note)) }
        }
        if let vector = v["versionVector"]?.objectValue, !vector.isEmpty {
            lines.append("")
            lines.append("version vector (last commit seen from each origin)")
            var table = TextTable(headers: ["ORIGIN", "SEQ"])
            for origin in vector.keys.sorted() { table.append([origin, int(vector[origin])]) }
            lines.append(indent(table.render(), by: 2))
        }
        if let peers = v["peers"]?.arrayValue, !peers.isEmpty {
            lines.append("")
            lines.append("peers")
            lines.append(indent(peerTable(peers, width: width.map { $0 - 2 }), by: 2))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One line per peer: state, last contact, lag both ways, last error.
    static func peerTable(_ peers: [JSONValue], width: Int?) -> String {
        var table = TextTable(headers: ["NAME", "STATE", "VERSION", "LAST CONTACT", "LAG", "TO PUSH", "LAST ERROR"])
        for p in peers {
            var lag = "\(int(p["lagCommits"])) commits"
            if let seconds = p["lagSeconds"], seconds != .null { lag += ", \(int(seconds)) s" }
            let version = p["schema"].flatMap { $0 == .null ? nil : "schema \(int($0)), protocol \(valueText(p["protocol"]))" } ?? "?"
            // The partner dials this node and carries both directions; this node stands by.
            let state = valueText(p["state"]) + (p["dialler"]?.stringValue == "partner" ? ", partner dials" : "")
            table.append([
                valueText(p["name"]), state, version, shortTime(p["lastContact"]?.stringValue),
                lag, int(p["pendingPush"]), p["lastError"]?.stringValue ?? "",
            ])
        }
        return table.render(maxWidth: width)
    }

    static func indent(_ text: String, by n: Int) -> String {
        let pad = String(repeating: " ", count: n)
        return text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.isEmpty ? "" : pad + $0 }
            .joined(separator: "\n")
            .trimmingTrailingNewlines
    }

    // MARK: Records

    /// The `records list` table: ID, KIND, STATUS, OWNER, TITLE (cut to the width, or 60 cells).
    public static func recordTable(_ records: [JSONValue], width: Int? = nil) -> String {
        var table = TextTable(headers: ["ID", "KIND", "STATUS", "OWNER", "TITLE"])
        for r in records {
            let fields = r["fields"] ?? r
            var title = TextTable.singleLine(fields["title"]?.stringValue ?? "")
            if fields["deleted"]?.boolValue == true { title = "[deleted] " + title }
            if let conflicts = r["conflicts"]?.arrayValue, !conflicts.isEmpty { title = "! " + title }
            if width == nil { title = TextTable.truncate(title, to: defaultTitleWidth) }
            table.append([
                r["id"]?.stringValue ?? "", fields["kind"]?.stringValue ?? "", statusCell(fields["status"]),
                fields["owner"]?.stringValue ?? "", title,
            ])
        }
        return table.render(maxWidth: width, shrink: 4)
    }

    /// The order fields are shown in.
    static func fieldOrder(_ names: some Collection<String>) -> [String] {
        let known = RecordFile.fieldOrder.filter { names.contains($0) }
        return known + names.filter { !RecordFile.fieldOrder.contains($0) }.sorted()
    }

    /// `records show`: every field on its own line, its version (time, org, author) under it,
    /// and `!` before a field whose value is in conflict.
    public static func recordDetail(_ v: JSONValue, width: Int? = nil) -> String {
        let id = v["id"]?.stringValue ?? "?"
        let fields = v["fields"]?.objectValue ?? [:]
        let versions = v["versions"]?.objectValue ?? [:]
        let conflicts = Set(v["conflicts"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        var lines = ["record \(id)" + (fields["deleted"]?.boolValue == true ? "  [deleted]" : "")]
        if let updated = v["updated"]?.stringValue { lines.append("updated \(shortTime(updated))") }
        lines.append("")
        let names = fieldOrder(Array(fields.keys))
        let nameWidth = names.map(\.count).max() ?? 0
        let pad = String(repeating: " ", count: nameWidth + 4)
        for name in names {
            let marker = conflicts.contains(name) ? "!" : " "
            var value = valueText(fields[name])
            if name == "status", let code = fields[name]?.stringValue, let s = ProgrammeStatus(rawValue: code) {
                value = "\(s.symbol) \(s.rawValue) (\(s.dutchLabel))"
            }
            let valueWidth = width.map { max(20, $0 - nameWidth - 4) }
            let valueLines = value.split(separator: "\n", omittingEmptySubsequences: false)
                .flatMap { wrap(String($0), to: valueWidth) }
            lines.append("\(marker) " + TextTable.pad(name, to: nameWidth) + "  " + (valueLines.first ?? ""))
            for more in valueLines.dropFirst() { lines.append(pad + more) }
            if let version = versions[name] {
                lines.append(pad + versionText(version))
            }
        }
        if !conflicts.isEmpty {
            lines.append("")
            lines.append("! conflicting values; see: progsync conflicts list")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Word-wraps one line to `width` cells (no wrapping when nil).
    public static func wrap(_ line: String, to width: Int?) -> [String] {
        guard let width, TextTable.displayWidth(line) > width else { return [line] }
        var lines: [String] = []
        var current = ""
        for word in line.split(separator: " ", omittingEmptySubsequences: false) {
            let candidate = current.isEmpty ? String(word) : current + " " + word
            if TextTable.displayWidth(candidate) <= width || current.isEmpty {
                current = candidate
            } else {
                lines.append(current)
                current = String(word)
            }
        }
        lines.append(current)
        return lines
    }

    /// `set 2024-05-01 10:00:00Z by alice (politie)`.
    static func versionText(_ version: JSONValue) -> String {
        var text = "set \(shortTime(version["time"]?.stringValue))"
        let author = version["author"]?.stringValue ?? ""
        let org = version["org"]?.stringValue ?? ""
        if !author.isEmpty { text += " by \(author)" }
        if !org.isEmpty { text += author.isEmpty ? " by \(org)" : " (\(org))" }
        return text
    }

    /// A one-line summary of a write: `{"record": …, "commit": {…}}`.
    /// The first line is `headline`, or `VERB ID` when nil.
    public static func writeResult(_ v: JSONValue, verb: String, headline: String? = nil) -> String {
        let record = v["record"] ?? .object([:])
        let id = record["id"]?.stringValue ?? "?"
        let fields = record["fields"] ?? .object([:])
        var lines = [headline ?? "\(verb) \(id)"]
        var parts: [String] = []
        if let kind = fields["kind"]?.stringValue { parts.append(kind) }
        if let status = fields["status"], status != .null { parts.append(statusCell(status)) }
        if let owner = fields["owner"]?.stringValue { parts.append(owner) }
        if let title = fields["title"]?.stringValue { parts.append(shorten(title, to: defaultTitleWidth)) }
        if fields["deleted"]?.boolValue == true { parts.append("[deleted]") }
        if !parts.isEmpty { lines.append("  " + parts.joined(separator: " · ")) }
        if let commit = v["commit"], commit != .null {
            let stamp = commit["stamp"]?.stringValue ?? "?"
            var text = "  commit \(stamp)"
            if let origin = commit["origin"]?.stringValue, let seq = commit["seq"]?.intValue {
                text += " (\(origin) #\(seq))"
            }
            lines.append(text)
        } else {
            lines.append("  no change")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: History

    public static func history(_ v: JSONValue, width: Int? = nil) -> String {
        let entries = v["history"]?.arrayValue ?? []
        guard !entries.isEmpty else { return "no history for \(v["id"]?.stringValue ?? "this record")\n" }
        var table = TextTable(headers: ["TIME", "ORG", "AUTHOR", "CHANGES"])
        for e in entries {
            let changes = (e["changes"]?.arrayValue ?? []).map { change -> String in
                let field = change["field"]?.stringValue ?? "?"
                let value = change["value"] ?? .null
                let text = value.stringValue.map { JSONValue.string($0).canonicalString } ?? value.canonicalString
                return "\(field)=" + shorten(text, to: 40)
            }
            table.append([
                shortTime(e["time"]?.stringValue), valueText(e["org"]), valueText(e["author"]),
                changes.joined(separator: ", "),
            ])
        }
        return table.render(maxWidth: width, shrink: 3, minShrinkWidth: 20)
    }

    // MARK: Conflicts

    public static func conflicts(_ v: JSONValue) -> String {
        let items = v["conflicts"]?.arrayValue ?? []
        guard !items.isEmpty else { return "no conflicts\n" }
        var lines: [String] = []
        for c in items {
            let id = c["id"]?.stringValue ?? "?"
            lines.append("\(id)    record \(valueText(c["record"])), field \(valueText(c["field"]))")
            var table = TextTable(headers: ["", "#", "VALUE", "ORG", "AUTHOR", "TIME"])
            for (i, version) in (c["versions"]?.arrayValue ?? []).enumerated() {
                let winner = version["winner"]?.boolValue ?? (i == 0)
                let value = version["value"] ?? .null
                let text = value.stringValue.map { JSONValue.string($0).canonicalString } ?? value.canonicalString
                table.append([
                    winner ? "*" : "", String(i), shorten(text, to: 50), valueText(version["org"]),
                    valueText(version["author"]), shortTime(version["time"]?.stringValue),
                ])
            }
            lines.append(indent(table.render(), by: 2))
            lines.append("")
        }
        lines.append("* = current winner.  resolve with: progsync conflicts resolve ID --pick N  (or --value V)")
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: Quarantine

    public static func quarantine(_ v: JSONValue, width: Int? = nil) -> String {
        let held = v["held"]?.arrayValue ?? []
        var out = ""
        if let newer = v["newerSchema"]?.arrayValue, !newer.isEmpty {
            out += "applied, waiting for a newer schema to be judged in full (upgrade progsync; they are judged again on start)\n"
            var table = TextTable(headers: ["ORIGIN", "SEQ", "NEEDS SCHEMA", "NOT UNDERSTOOD HERE"])
            for n in newer {
                table.append([valueText(n["origin"]), int(n["seq"]), int(n["needsSchema"]),
                              (n["gaps"]?.arrayValue ?? []).map(valueText).joined(separator: "; ")])
            }
            out += table.render(maxWidth: width, shrink: 3, minShrinkWidth: 20) + "\n"
        }
        if let withheld = v["withheld"]?.arrayValue, !withheld.isEmpty {
            out += "withheld: signed by a node a coordinator retired before them (undone where merged; enter again what should stay)\n"
            var table = TextTable(headers: ["ORIGIN", "ORG", "SEQ", "RETIRED AFTER", "TIME", "CHANGES"])
            for w in withheld {
                let changes = (w["changes"]?.arrayValue ?? []).map {
                    "\(valueText($0["record"])).\(valueText($0["field"]))=\(($0["value"] ?? .null).canonicalString.prefix(40))"
                }
                table.append([valueText(w["origin"]), valueText(w["org"]), int(w["seq"]), int(w["retiredAfter"]), valueText(w["time"]),
                              changes.joined(separator: "; ")])
            }
            out += table.render(maxWidth: width, shrink: 5, minShrinkWidth: 20) + "\n"
        }
        guard !held.isEmpty else { return out + "nothing held in quarantine\n" }
        var table = TextTable(headers: ["HASH", "ORIGIN", "SEQ", "REASON", "TIME", "RECEIVED", "DETAIL"])
        for h in held {
            table.append([
                String((h["hash"]?.stringValue ?? "").prefix(16)), valueText(h["origin"]), int(h["seq"]),
                valueText(h["reason"]), shortTime(h["time"]?.stringValue), shortTime(h["receivedAt"]?.stringValue),
                valueText(h["detail"]),
            ])
        }
        return out + table.render(maxWidth: width, shrink: 6, minShrinkWidth: 20)
            + "release with: progsync quarantine release HASH  (a unique prefix is enough)\n"
    }
}

extension String {
    func replacingFirst(_ target: Character, with replacement: String) -> String {
        guard let i = firstIndex(of: target) else { return self }
        var copy = self
        copy.replaceSubrange(i...i, with: replacement)
        return copy
    }

    var trimmingTrailingNewlines: String {
        var s = self
        while s.hasSuffix("\n") { s.removeLast() }
        return s
    }
}
