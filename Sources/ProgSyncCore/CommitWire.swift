/// The peer wire form of commits: JSON batches whose items carry the canonical bytes and the
/// signature in base64. Receivers decode the canonical bytes themselves, so what is verified is
/// exactly what was signed, whatever a relay did to the JSON around it.
public enum CommitWire {
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
            guard let body = item["body"]?.stringValue.flatMap(Base64.decode), let sig = item["sig"]?.stringValue.flatMap(Base64.decode),
                sig.count == 64
            else { throw CommitDecodingError("commit \(i): needs base64 body and a 64-byte sig") }
            do {
                out.append(try SignedCommit(canonicalBytes: body, signature: sig))
            } catch {
                throw CommitDecodingError("commit \(i): \(error.description)")
            }
        }
        return out
    }
}
