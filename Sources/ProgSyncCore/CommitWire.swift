/// The peer wire form of commits: JSON batches whose items carry the canonical bytes and the
/// signature in base64. Receivers decode the canonical bytes themselves, so what is verified is
/// exactly what was signed, whatever a relay did to the JSON around it.
public enum CommitWire {
    /// A version vector as partners send it (hello, pull answers, bundle headers): origin →
    /// highest seq; entries that are not a node id and a seq ≥ 0 are left out.
    public static func versionVector(_ value: JSONValue?) -> [NodeID: UInt64] {
        var out: [NodeID: UInt64] = [:]
        for (k, v) in value?.objectValue ?? [:] {
            if let id = NodeID(k), let seq = v.intValue, seq >= 0 { out[id] = UInt64(seq) }
        }
        return out
    }

    public static func json(_ commit: SignedCommit) -> JSONValue {
        .object(["body": .string(Base64.encode(commit.canonicalBytes)), "sig": .string(Base64.encode(commit.signature))])
    }

    public static func json(_ commits: [SignedCommit]) -> JSONValue { .array(commits.map(json)) }

    public static func json(body: [UInt8], signature: [UInt8]) -> JSONValue {
        .object(["body": .string(Base64.encode(body)), "sig": .string(Base64.encode(signature))])
    }

    /// Decodes a batch; one malformed item refuses the whole batch (nothing half-applied).
    public static func decode(_ value: JSONValue, maxCommits: Int) throws(CommitDecodingError) -> [SignedCommit] {
        guard let items = value.arrayValue else { throw CommitDecodingError("commits must be a list") }
        guard items.count <= maxCommits else { throw CommitDecodingError("more than \(maxCommits) commits in one batch") }
        var out: [SignedCommit] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            out.append(try decode(item: item, index: i))
        }
        return out
    }

    /// Decodes a pushed body, `{"commits": [...]}`, straight from its bytes. Only one item's JSON
    /// tree exists at a time, and a batch stops at its first item over `maxCommits`, so memory
    /// follows the commits accepted rather than what a sender packed into the body. Other
    /// top-level keys are checked and skipped.
    public static func decodeBatch(json bytes: UnsafeBufferPointer<UInt8>, maxCommits: Int) throws(CommitDecodingError) -> [SignedCommit] {
        var parser = JSONParser(buffer: bytes, maxDepth: 8)
        var commits: [SignedCommit]?
        do {
            parser.skipWhitespace()
            guard parser.next == UInt8(ascii: "{") else { throw parser.error("expected an object") }
            parser.index += 1
            parser.skipWhitespace()
            var keys = Set<String>()
            if parser.next == UInt8(ascii: "}") { parser.index += 1 } else {
                while true {
                    parser.skipWhitespace()
                    guard parser.next == UInt8(ascii: "\"") else { throw parser.error("expected a string key") }
                    let key = try parser.parseString()
                    guard keys.insert(key).inserted else { throw parser.error("duplicate key in object") }
                    parser.skipWhitespace()
                    guard parser.next == UInt8(ascii: ":") else { throw parser.error("expected ':'") }
                    parser.index += 1
                    parser.skipWhitespace()
                    if key == "commits", parser.next == UInt8(ascii: "[") {
                        commits = try parseItems(&parser, maxCommits: maxCommits)
                    } else {
                        try parser.skipValue(depth: 1)
                    }
                    parser.skipWhitespace()
                    if parser.next == UInt8(ascii: ",") { parser.index += 1; continue }
                    if parser.next == UInt8(ascii: "}") { parser.index += 1; break }
                    throw parser.error("expected ',' or '}'")
                }
            }
            parser.skipWhitespace()
            guard parser.index == bytes.count else { throw parser.error("unexpected data after the JSON value") }
        } catch let error as CommitDecodingError {
            throw error
        } catch {
            throw CommitDecodingError("malformed JSON: \(error)")
        }
        guard let commits else { throw CommitDecodingError("commits must be a list") }
        return commits
    }

    /// The items of the `commits` list, each decoded as soon as it is parsed.
    private static func parseItems(_ parser: inout JSONParser, maxCommits: Int) throws -> [SignedCommit] {
        var out: [SignedCommit] = []
        parser.index += 1
        parser.skipWhitespace()
        if parser.next == UInt8(ascii: "]") { parser.index += 1; return out }
        while true {
            parser.skipWhitespace()
            guard out.count < maxCommits else { throw CommitDecodingError("more than \(maxCommits) commits in one batch") }
            out.append(try decode(item: try parser.parseValue(depth: 2), index: out.count))
            parser.skipWhitespace()
            if parser.next == UInt8(ascii: ",") { parser.index += 1; continue }
            if parser.next == UInt8(ascii: "]") { parser.index += 1; return out }
            throw parser.error("expected ',' or ']'")
        }
    }

    private static func decode(item: JSONValue, index i: Int) throws(CommitDecodingError) -> SignedCommit {
        guard let body = item["body"]?.stringValue.flatMap(Base64.decode), let sig = item["sig"]?.stringValue.flatMap(Base64.decode),
            sig.count == 64
        else { throw CommitDecodingError("commit \(i): needs base64 body and a 64-byte sig") }
        do {
            return try SignedCommit(canonicalBytes: body, signature: sig)
        } catch {
            throw CommitDecodingError("commit \(i): \(error.description)")
        }
    }
}

extension JSONParser {
    /// The byte at the parse position, nil at the end.
    fileprivate var next: UInt8? { index < buffer.count ? buffer[index] : nil }
}
