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
/// its causal past and the registry, and every node decides the same.
public struct Commit: Sendable, Hashable {
    public var origin: NodeID
    public var seq: UInt64
    public var stamp: Stamp
    public var author: String
    public var prev: [UInt8]  // empty for seq 1, else 32 bytes
    public var ownerRefs: [String: CommitRef]
    public var changes: [Change]

    public init(
        origin: NodeID, seq: UInt64, stamp: Stamp, author: String, prev: [UInt8],
        ownerRefs: [String: CommitRef] = [:], changes: [Change]
    ) {
        self.origin = origin
        self.seq = seq
        self.stamp = stamp
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

    static let magic: [UInt8] = Array("progsync-commit-v1".utf8) + [0]

    /// The canonical bytes that are signed and hashed: length-prefixed, fixed order, values in
    /// canonical JSON. Decoding and re-encoding gives the same bytes.
    public var canonicalBytes: [UInt8] {
        var w = ByteWriter()
        w.bytes.reserveCapacity(128 + changes.count * 96)
        w.raw(Self.magic)
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

    public init(canonicalBytes bytes: [UInt8]) throws(CommitDecodingError) {
        var r = ByteReader(bytes: bytes)
        guard try r.raw(Self.magic.count) == Self.magic else { throw CommitDecodingError("not a progsync commit") }
        guard let origin = NodeID(try r.string()) else { throw CommitDecodingError("invalid origin") }
        self.origin = origin
        self.seq = try r.u64()
        self.stamp = Stamp(rawValue: try r.u64())
        self.author = try r.string()
        self.prev = try r.blob()
        var refs: [String: CommitRef] = [:]
        for _ in 0..<(try r.u32()) {
            let record = try r.string()
            guard let o = NodeID(try r.string()) else { throw CommitDecodingError("invalid owner ref") }
            refs[record] = CommitRef(origin: o, seq: try r.u64())
        }
        self.ownerRefs = refs
        let count = try r.u32()
        guard count <= 100_000 else { throw CommitDecodingError("too many changes") }
        var changes: [Change] = []
        changes.reserveCapacity(Int(count))
        for _ in 0..<count {
            let record = try r.string()
            let field = try r.string()
            let valueBytes = try r.blob()
            let value: JSONValue
            do { value = try JSONParser.parse(valueBytes) } catch { throw CommitDecodingError("invalid value: \(error)") }
            var supersedes: [CommitRef] = []
            for _ in 0..<(try r.u32()) {
                guard let o = NodeID(try r.string()) else { throw CommitDecodingError("invalid supersedes ref") }
                supersedes.append(CommitRef(origin: o, seq: try r.u64()))
            }
            // Canonical bytes must re-encode identically, or the signature would cover other bytes.
            guard value.canonicalBytes == valueBytes else { throw CommitDecodingError("value not in canonical form") }
            changes.append(Change(record: record, field: field, value: value, valueBytes: valueBytes, supersedes: supersedes))
        }
        guard r.isAtEnd else { throw CommitDecodingError("trailing bytes") }
        self.changes = changes
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

    /// Reads a stored commit's stamp and changes without parsing the values: for rebuilding from
    /// a log whose commits were fully checked when they arrived.
    public static func storedChanges(_ bytes: [UInt8]) throws(CommitDecodingError) -> (ref: CommitRef, stamp: Stamp, changes: [StoredChange]) {
        var r = ByteReader(bytes: bytes)
        guard try r.raw(magic.count) == magic else { throw CommitDecodingError("not a progsync commit") }
        guard let origin = NodeID(try r.string()) else { throw CommitDecodingError("invalid origin") }
        let seq = try r.u64()
        let stamp = Stamp(rawValue: try r.u64())
        _ = try r.string()
        _ = try r.blob()
        for _ in 0..<(try r.u32()) {
            _ = try r.string()
            _ = try r.string()
            _ = try r.u64()
        }
        let count = try r.u32()
        guard count <= 100_000 else { throw CommitDecodingError("too many changes") }
        var changes: [StoredChange] = []
        changes.reserveCapacity(Int(count))
        for _ in 0..<count {
            let record = try r.string()
            let field = try r.string()
            let valueBytes = try r.blob()
            var supersedes: [CommitRef] = []
            for _ in 0..<(try r.u32()) {
                guard let o = NodeID(try r.string()) else { throw CommitDecodingError("invalid supersedes ref") }
                supersedes.append(CommitRef(origin: o, seq: try r.u64()))
            }
            changes.append(StoredChange(record: record, field: field, valueBytes: valueBytes, supersedes: supersedes))
        }
        return (CommitRef(origin: origin, seq: seq), stamp, changes)
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

    mutating func raw(_ n: Int) throws(CommitDecodingError) -> [UInt8] {
        guard n >= 0, offset + n <= bytes.count else { throw CommitDecodingError("truncated commit") }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
    mutating func u32() throws(CommitDecodingError) -> UInt32 {
        try raw(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws(CommitDecodingError) -> UInt64 {
        try raw(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func blob() throws(CommitDecodingError) -> [UInt8] { try raw(Int(try u32())) }
    mutating func string() throws(CommitDecodingError) -> String {
        guard let s = String(validating: try blob(), as: UTF8.self) else { throw CommitDecodingError("invalid UTF-8") }
        return s
    }
}
