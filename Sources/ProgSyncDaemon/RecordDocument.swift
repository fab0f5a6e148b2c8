import ProgSyncCore
import ProgSyncStore

/// A record's JSON answer written straight from its stored rows. The stored values are canonical
/// JSON already, so they are copied rather than parsed and re-encoded; keys come out in the
/// canonical order, so the bytes equal the canonical encoding of the same document.
struct RecordDocument {
    let id: String
    let rows: [StoredFieldRow]

    /// nil when the record does not exist (no winning field).
    init?(id: String, rows: [StoredFieldRow]) {
        guard rows.first.map({ !$0.isLoser }) == true else { return nil }
        self.id = id
        self.rows = rows
    }

    /// `{"basis"?, "conflicts"?, "fields", "id", "updated", "versions"?}`; `org` names a
    /// version's origin. `basis` names each shown field's version as `origin/seq`, so that a
    /// file exported from this answer can say what each cell was edited from (`ImportPlan`).
    func write(into out: inout [UInt8], withVersions: Bool, withBasis: Bool = false, org: (String) -> String?) {
        let winners = rows.prefix { !$0.isLoser }
        var conflicted: [String] = []
        var lastLoser: String?
        for loser in rows[winners.endIndex...] where loser.field != lastLoser {
            lastLoser = loser.field
            if winners.contains(where: { $0.field == loser.field }) { conflicted.append(loser.field) }
        }
        out.append(UInt8(ascii: "{"))
        if withBasis {
            out.append(contentsOf: #""basis":{"#.utf8)
            for (i, row) in winners.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(row.field, into: &out)
                out.append(UInt8(ascii: ":"))
                JSONValue.writeString("\(row.origin)/\(row.seq)", into: &out)
            }
            out.append(contentsOf: "},".utf8)
        }
        if !conflicted.isEmpty {
            out.append(contentsOf: #""conflicts":["#.utf8)
            for (i, name) in conflicted.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(name, into: &out)
            }
            out.append(contentsOf: "],".utf8)
        }
        out.append(contentsOf: #""fields":{"#.utf8)
        var first = true
        var latest = Stamp.zero
        for row in winners {
            latest = max(latest, row.stamp)
            // A value is checked, not re-encoded: a row damaged behind the daemon's back must not
            // break the answer (it is left out, as a null is, until reconciliation repairs it).
            let shown = row.value.withUnsafeBufferPointer { $0.elementsEqual("null".utf8) ? false : JSONParser.isWellFormed($0) }
            guard shown else { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSONValue.writeString(row.field, into: &out)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: row.value)
        }
        out.append(contentsOf: #"},"id":"#.utf8)
        JSONValue.writeString(id, into: &out)
        out.append(contentsOf: #","updated":""#.utf8)
        Stamp.appendISO8601(milliseconds: latest.milliseconds, to: &out)
        out.append(UInt8(ascii: "\""))
        if withVersions {
            out.append(contentsOf: #","versions":{"#.utf8)
            // Fields written by one commit share their version object: write it once per commit.
            var written: [(origin: String, seq: UInt64, bytes: [UInt8])] = []
            for (i, row) in winners.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(row.field, into: &out)
                out.append(UInt8(ascii: ":"))
                if let same = written.first(where: { $0.seq == row.seq && $0.origin == row.origin }) {
                    out.append(contentsOf: same.bytes)
                    continue
                }
                var version: [UInt8] = []
                version.reserveCapacity(192)
                version.append(contentsOf: #"{"author":"#.utf8)
                JSONValue.writeString(row.author ?? "unknown", into: &version)
                version.append(contentsOf: #","org":"#.utf8)
                JSONValue.writeString(org(row.origin) ?? "unknown", into: &version)
                version.append(contentsOf: #","origin":"#.utf8)
                JSONValue.writeString(row.origin, into: &version)
                version.append(contentsOf: #","stamp":""#.utf8)
                row.stamp.appendHex(to: &version)
                version.append(contentsOf: #"","time":""#.utf8)
                Stamp.appendISO8601(milliseconds: row.stamp.milliseconds, to: &version)
                version.append(contentsOf: #""}"#.utf8)
                out.append(contentsOf: version)
                written.append((row.origin, row.seq, version))
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "}"))
    }
}
