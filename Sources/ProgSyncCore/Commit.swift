import Crypto

/// Names one commit: its origin node and sequence number.
public struct CommitRef: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var origin: NodeID
    public var seq: UInt64

    public init(origin: NodeID, seq: UInt64) {
        self.origin = origin
        self.seq = seq
    }

    public static func < (a: CommitRef, b: CommitRef) -> Bool { (a.origin, a.seq) < (b.origin, b.seq) }
    public var description: String { "\(origin)/\(seq)" }
}

/// One field change. `supersedes` names the versions of this field that the author saw and
/// replaced; a version nobody superseded and that is not the winner is a conflict loser (§7).
public struct Change: Sendable, Hashable {
    public var record: String
    public var field: String
    public var value: JSONValue {
        didSet { valueBytes = value.canonicalBytes }
    }
    public var supersedes: [CommitRef]
    /// The value's canonical JSON, made once: it is signed, size-checked, hashed and stored.
    public private(set) var valueBytes: [UInt8]

    public init(record: String, field: String, value: JSONValue, supersedes: [CommitRef] = []) {
        self.init(record: record, field: field, value: value, valueBytes: value.canonicalBytes, supersedes: supersedes)
    }

    init(record: String, field: String, value: JSONValue, valueBytes: [UInt8], supersedes: [CommitRef]) {
        self.record = record
        self.field = field
        self.value = value
        self.valueBytes = valueBytes
        self.supersedes = supersedes.sorted()
    }
}

/// The signed content of a commit (§6). `ownerRefs` maps each record the commit touches to the
/// commit that made the committing org its owner, so authorisation is a function of the commit,
/// its causal past and the registry, and every node decides the same. `schema` is the programme
/// schema version its author wrote under: a node on an older schema keeps such a commit and
/// judges its values again once it knows that version.
public struct Commit: Sendable, Hashable {
    public var origin: NodeID
    public var seq: UInt64
    public var stamp: Stamp
    public var schema: UInt32
    public var author: String
    public var prev: [UInt8]  // empty for seq 1, else 32 bytes
    public var ownerRefs: [String: CommitRef]
    public var changes: [Change]

    public init(
        origin: NodeID, seq: UInt64, stamp: Stamp, schema: UInt32 = 1, author: String, prev: [UInt8],
        ownerRefs: [String: CommitRef] = [:], changes: [Change]
    ) {
        self.origin = origin
        self.seq = seq
        self.stamp = stamp
        self.schema = schema
        self.author = author
        self.prev = prev
        self.ownerRefs = ownerRefs
        self.changes = changes
    }

    public var ref: CommitRef { CommitRef(origin: origin, seq: seq) }

    /// Every commit of another origin this one depends on; it is applied only after them.
    public var dependencies: Set<CommitRef> {
        var deps = Set<CommitRef>()
        for ref in ownerRefs.values where ref.origin != origin { deps.insert(ref) }
        for change in changes {
            for ref in change.supersedes where ref.origin != origin { deps.insert(ref) }
        }
        return deps
    }

    /// Format 1 has no schema field (schema 1); format 2 carries it right after the magic.
    /// A schema-1 commit is always written in format 1, so releases before format 2 read it.
    static let magicV1: [UInt8] = Array("progsync-commit-v1".utf8) + [0]
    static let magicV2: [UInt8] = Array("progsync-commit-v2".utf8) + [0]

    /// The canonical bytes that are signed and hashed: length-prefixed, fixed order, refs sorted,
    /// values in canonical JSON. Decoding and re-encoding gives the same bytes.
    public var canonicalBytes: [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(128 + changes.count * 96)
        if schema <= 1 {
            w.raw(Self.magicV1)
        } else {
            w.raw(Self.magicV2)
            w.u32(schema)
        }
        w.string(origin.rawValue)
        w.u64(seq)
        w.u64(stamp.rawValue)
        w.string(author)
        w.blob(prev)
        let refs = ownerRefs.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        w.u32(UInt32(refs.count))
        for (record, ref) in refs {
            w.string(record)
            w.string(ref.origin.rawValue)
            w.u64(ref.seq)
        }
        w.u32(UInt32(changes.count))
        for change in changes {
            w.string(change.record)
            w.string(change.field)
            w.blob(change.valueBytes)
            w.u32(UInt32(change.supersedes.count))
            for ref in change.supersedes {
                w.string(ref.origin.rawValue)
                w.u64(ref.seq)
            }
        }
        return w.bytes
    }

    /// Decodes and checks canonical form: values parse and re-encode to the same bytes, refs are
    /// sorted without repeats, nothing trails. Anything else would let one signature cover bytes
    /// that re-encode differently.
    public init(canonicalBytes bytes: [UInt8]) throws(CommitDecodingError) {
        let layout = try Layout(bytes)
        var changes: [Change] = []
        changes.reserveCapacity(layout.changes.count)
        for stored in layout.changes {
            let value: JSONValue
            do { value = try JSONParser.parse(stored.valueBytes) } catch { throw CommitDecodingError("invalid value: \(error)") }
            guard value.canonicalBytes == stored.valueBytes else { throw CommitDecodingError("value not in canonical form") }
            changes.append(Change(record: stored.record, field: stored.field, value: value, valueBytes: stored.valueBytes,
                                  supersedes: stored.supersedes))
        }
        self.init(origin: layout.origin, seq: layout.seq, stamp: layout.stamp, schema: layout.schema, author: layout.author,
                  prev: layout.prev, ownerRefs: layout.ownerRefs, changes: changes)
    }
}

extension Commit {
    /// One change as stored, its value left as canonical bytes.
    public struct StoredChange: Sendable {
        public var record: String
        public var field: String
        public var valueBytes: [UInt8]
        public var supersedes: [CommitRef]
    }

    /// The commit format's one reader: every field but the values parsed. `init(canonicalBytes:)`
    /// parses the values on top; rebuilding from a log whose commits were fully checked when they
    /// arrived reads only this.
    public struct Layout: Sendable {
        public var origin: NodeID
        public var seq: UInt64
        public var stamp: Stamp
        public var schema: UInt32
        public var author: String
        public var prev: [UInt8]
        public var ownerRefs: [String: CommitRef]
        public var changes: [StoredChange]

        public var ref: CommitRef { CommitRef(origin: origin, seq: seq) }

        public init(_ bytes: [UInt8]) throws(CommitDecodingError) {
            var r = ByteReader(bytes: bytes)
            let magic = try r.raw(magicV1.count)
            if magic == magicV1 {
                schema = 1
            } else if magic == magicV2 {
                schema = try r.u32()
                guard schema >= 2 else { throw CommitDecodingError("format 2 with schema \(schema)") }
            } else {
                throw CommitDecodingError("not a progsync commit")
            }
            guard let origin = NodeID(try r.string()) else { throw CommitDecodingError("invalid origin") }
            self.origin = origin
            seq = try r.u64()
            stamp = Stamp(rawValue: try r.u64())
            author = try r.string()
            prev = try r.blob()
            var refs: [String: CommitRef] = [:]
            var lastRecord: String?
            for _ in 0..<(try r.u32()) {
                let record = try r.string()
                guard lastRecord.map({ $0.utf8.lexicographicallyPrecedes(record.utf8) }) ?? true else {
                    throw CommitDecodingError("owner refs not sorted")
                }
                lastRecord = record
                guard let o = NodeID(try r.string()) else { throw CommitDecodingError("invalid owner ref") }
                refs[record] = CommitRef(origin: o, seq: try r.u64())
            }
            ownerRefs = refs
            let count = try r.u32()
            guard count <= 100_000 else { throw CommitDecodingError("too many changes") }
            changes = []
            changes.reserveCapacity(Int(count))
            for _ in 0..<count {
                let record = try r.string()
                let field = try r.string()
                let valueBytes = try r.blob()
                var supersedes: [CommitRef] = []
                for _ in 0..<(try r.u32()) {
                    guard let o = NodeID(try r.string()) else { throw CommitDecodingError("invalid supersedes ref") }
                    let ref = CommitRef(origin: o, seq: try r.u64())
                    guard supersedes.last.map({ $0 < ref }) ?? true else { throw CommitDecodingError("supersedes not sorted") }
                    supersedes.append(ref)
                }
                changes.append(StoredChange(record: record, field: field, valueBytes: valueBytes, supersedes: supersedes))
            }
            guard r.isAtEnd else { throw CommitDecodingError("trailing bytes") }
        }
    }
}

public struct CommitDecodingError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A commit with its origin's signature. `hash` covers the canonical bytes and the signature, and
/// is what the origin's next commit names as `prev`: verifying the newest signature of a chain
/// authenticates every commit before it.
public struct SignedCommit: Sendable, Hashable {
    public let commit: Commit
    public let canonicalBytes: [UInt8]
    public let signature: [UInt8]
    public let hash: [UInt8]

    public init(commit: Commit, signature: [UInt8]) {
        self.init(commit: commit, canonicalBytes: commit.canonicalBytes, signature: signature)
    }

    public init(commit: Commit, canonicalBytes: [UInt8], signature: [UInt8]) {
        self.commit = commit
        self.canonicalBytes = canonicalBytes
        self.signature = signature
        var hasher = SHA256()
        hasher.update(data: canonicalBytes)
        hasher.update(data: signature)
        self.hash = Array(hasher.finalize())
    }

    /// Rebuilds a stored commit from its canonical bytes and signature.
    public init(canonicalBytes: [UInt8], signature: [UInt8]) throws(CommitDecodingError) {
        self.init(commit: try Commit(canonicalBytes: canonicalBytes), canonicalBytes: canonicalBytes, signature: signature)
    }

    public static func sign(_ commit: Commit, with identity: NodeIdentity) throws -> SignedCommit {
        let bytes = commit.canonicalBytes
        return SignedCommit(commit: commit, canonicalBytes: bytes, signature: try identity.sign(bytes))
    }

    public func hasValidSignature(publicKey: Curve25519.Signing.PublicKey) -> Bool {
        publicKey.isValidSignature(signature, for: canonicalBytes)
    }

    public var ref: CommitRef { commit.ref }
}

struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func blob(_ b: [UInt8]) {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }
    mutating func string(_ s: String) {
        u32(UInt32(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }
}

struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    var isAtEnd: Bool { offset == bytes.count }

    /// The next `n` bytes, in place; numbers and strings are read from it without a copy.
    mutating func slice(_ n: Int) throws(CommitDecodingError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - offset else { throw CommitDecodingError("truncated commit") }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }
    mutating func raw(_ n: Int) throws(CommitDecodingError) -> [UInt8] { Array(try slice(n)) }
    mutating func u32() throws(CommitDecodingError) -> UInt32 {
        try slice(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws(CommitDecodingError) -> UInt64 {
        try slice(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func blob() throws(CommitDecodingError) -> [UInt8] { try raw(Int(try u32())) }
    mutating func string() throws(CommitDecodingError) -> String {
        guard let s = String(validating: try slice(Int(try u32())), as: UTF8.self) else { throw CommitDecodingError("invalid UTF-8") }
        return s
    }
}
