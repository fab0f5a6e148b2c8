import Crypto

/// The audit log's format: one canonical JSON object per line, each carrying `seq` (1, 2, …)
/// and `prev`, the SHA-256 of the previous line's bytes (64 zeros on line 1). Editing, removing
/// or reordering a line breaks the chain at the next line. The last line is covered by the
/// head, a separate small file holding the newest line's seq and hash: cutting lines off the
/// end leaves a log shorter than its head.
///
/// The chain has no secret: whoever can write both files can rewrite the whole log
/// consistently. Compare the head with a copy kept elsewhere (`progsync audit verify` prints
/// it) to catch that.
public enum AuditChain {
    public static let genesis = String(repeating: "0", count: 64)
    /// The daemon writes this action when it finds its log shorter than, or different from, the
    /// head at start; `verify` reports every such line.
    public static let chainBreakAction = "audit-chain-break"
    /// Fields every line has (BIO 8.15: action, object, result, origin, actor, time), and the chain's own.
    public static let requiredFields = ["seq", "prev", "time", "action", "object", "result", "origin", "actor"]

    public static func hash(_ line: some Sequence<UInt8>) -> String {
        Hex.encode(SHA256.hash(data: Array(line)))
    }

    /// The newest line's seq and hash, as the head file holds it.
    public struct Head: Sendable, Equatable {
        public var seq: Int64
        public var hash: String
        public init(seq: Int64, hash: String) {
            self.seq = seq
            self.hash = hash
        }

        public var json: JSONValue { .object(["seq": .int(seq), "hash": .string(hash)]) }

        public init?(json: JSONValue) {
            guard let seq = json["seq"]?.intValue, seq >= 0, let hash = json["hash"]?.stringValue, hash.utf8.count == 64 else { return nil }
            self.init(seq: seq, hash: hash)
        }
    }

    /// The line for an event: its fields plus `seq` and `prev`, canonical JSON without the newline.
    public static func line(_ fields: [String: JSONValue], seq: Int64, prev: String) -> [UInt8] {
        var fields = fields
        fields["seq"] = .int(seq)
        fields["prev"] = .string(prev)
        return JSONValue.object(fields).canonicalBytes
    }

    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        /// 1-based line number in the file.
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    public struct Verification: Sendable {
        /// Complete lines read.
        public var lines = 0
        /// The last complete line's seq and hash.
        public var last: Head?
        public var problems: [Problem] = []
        /// Bytes after the last newline (a write in progress, or a torn one).
        public var incompleteBytes = 0
        public var ok: Bool { problems.isEmpty }
    }

    /// Checks the whole log against itself and, when given, against its head.
    public static func verify(_ data: [UInt8], head: Head?) -> Verification {
        var v = Verification()
        var prevHash = genesis
        var expectedSeq: Int64 = 1
        var atHead: (hash: String, line: Int)?
        var start = 0
        while let end = data[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let bytes = data[start..<end]
            start = end + 1
            v.lines += 1
            let n = v.lines
            let hash = Self.hash(bytes)
            defer { prevHash = hash }
            guard let json = try? JSONParser.parse(Array(bytes)), json.objectValue != nil else {
                v.problems.append(Problem(line: n, message: "not a JSON object: the line was damaged"))
                expectedSeq += 1
                continue
            }
            let missing = requiredFields.filter { json[$0] == nil }
            if !missing.isEmpty { v.problems.append(Problem(line: n, message: "lacks \(missing.joined(separator: ", "))")) }
            let seq = json["seq"]?.intValue ?? -1
            if seq != expectedSeq {
                v.problems.append(Problem(line: n, message: seq < expectedSeq
                    ? "seq \(seq) where \(expectedSeq) was expected: lines were reordered or copied"
                    : "seq \(seq) where \(expectedSeq) was expected: \(seq - expectedSeq) line(s) before it were removed"))
            } else if json["prev"]?.stringValue != prevHash {
                // In sequence, yet not chained to the line before: that line (or this one's prev) was edited.
                v.problems.append(Problem(line: max(1, n - 1), message: n == 1
                    ? "the first line's prev is not the genesis hash: the start of the log was removed or edited"
                    : "changed after it was written (line \(n)'s prev hash does not match it)"))
            }
            if json["action"]?.stringValue == chainBreakAction {
                v.problems.append(Problem(line: n, message: "the daemon found the log cut or changed here: \(json["detail"]?.stringValue ?? "")"))
            }
            expectedSeq = seq + 1
            if seq == head?.seq { atHead = (hash, n) }
            v.last = Head(seq: seq, hash: hash)
        }
        v.incompleteBytes = data.count - start
        if let head {
            if let found = atHead {
                if found.hash != head.hash {
                    v.problems.append(Problem(line: found.line, message: "differs from the recorded head (seq \(head.seq)): the line was edited"))
                }
            } else if head.seq > (v.last?.seq ?? 0) {
                v.problems.append(Problem(line: v.lines + 1, message:
                    "the log ends at seq \(v.last?.seq ?? 0) but its head records seq \(head.seq): the last \(head.seq - (v.last?.seq ?? 0)) line(s) were removed"))
            }
        }
        return v
    }
}
