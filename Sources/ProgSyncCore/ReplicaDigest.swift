import Crypto

/// The replica digest (§9): a Merkle tree over the winning `(record, field, stamp, origin, value)`
/// entries and the conflict losers kept beside them. Entries fall into 4096 buckets by a hash of the record id; a bucket's leaf is the sum
/// modulo 2^256 of its entries' SHA-256, so it can be updated in place when a winner changes.
/// 64 inner nodes hash 64 leaves each; the root hashes the inner nodes. Equal replicas compare by
/// root in one round trip; unequal ones narrow down root → inner → bucket → entries.
public enum ReplicaDigest {
    public static let bucketCount = 4096
    public static let fanout = 64

    /// FNV-1a: stable everywhere, cheap, and good enough to spread record ids.
    public static func bucket(ofRecord record: String) -> Int {
        var record = record
        return record.withUTF8 { bucket(ofRecordBytes: $0) }
    }

    public static func bucket(ofRecordBytes bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return Int(h % UInt64(bucketCount))
    }

    public static func entryHash(record: String, field: String, version: FieldVersion) -> BucketSum {
        hash(record: record, field: field, version: version, loser: false)
    }

    /// A conflict loser counts too, so replicas that list different conflicts differ in digest.
    public static func loserHash(record: String, field: String, version: FieldVersion) -> BucketSum {
        hash(record: record, field: field, version: version, loser: true)
    }

    static func hash(record: String, field: String, version: FieldVersion, loser: Bool) -> BucketSum {
        var buffer: [UInt8] = []
        return hash(record: record, field: field, version: version, loser: loser, scratch: &buffer)
    }

    /// One contiguous buffer and one SHA-256 call: this runs for every merged change, so the
    /// merge path passes one scratch buffer for all of them.
    public static func hash(record: String, field: String, version: FieldVersion, loser: Bool, scratch buffer: inout [UInt8]) -> BucketSum {
        buffer.removeAll(keepingCapacity: true)
        buffer.reserveCapacity(record.utf8.count + field.utf8.count + version.value.count + 31)
        appendEntry(to: &buffer, record: record, field: field, version: version, loser: loser)
        return BucketSum(digest: SHA256.hash(data: buffer))
    }

    /// The bytes an entry hashes: record, field, stamp, origin, value. A loser's end in 0x01,
    /// which cannot end a winner's: canonical JSON has no raw control bytes.
    public static func appendEntry(to buffer: inout [UInt8], record: String, field: String, version: FieldVersion, loser: Bool) {
        var record = record, field = field, origin = version.origin.rawValue
        record.withUTF8 { r in
            field.withUTF8 { f in
                origin.withUTF8 { o in
                    version.value.withUnsafeBytes { v in
                        appendEntry(to: &buffer, record: UnsafeRawBufferPointer(r), field: UnsafeRawBufferPointer(f),
                                    stamp: version.stamp.rawValue, origin: UnsafeRawBufferPointer(o), value: v, loser: loser)
                    }
                }
            }
        }
    }

    /// The entry layout itself, on raw bytes: the nightly sum feeds it SQLite's row buffers.
    public static func appendEntry(
        to buffer: inout [UInt8], record: UnsafeRawBufferPointer, field: UnsafeRawBufferPointer, stamp: UInt64,
        origin: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, loser: Bool
    ) {
        buffer.append(contentsOf: record)
        buffer.append(0)
        buffer.append(contentsOf: field)
        buffer.append(0)
        withUnsafeBytes(of: stamp.bigEndian) { buffer.append(contentsOf: $0) }
        buffer.append(contentsOf: origin)
        buffer.append(0)
        buffer.append(contentsOf: value)
        if loser { buffer.append(1) }
    }

    public static func innerNodes(_ buckets: [BucketSum]) -> [[UInt8]] {
        precondition(buckets.count == bucketCount)
        return (0..<(bucketCount / fanout)).map { i in
            var hasher = SHA256()
            for b in buckets[(i * fanout)..<((i + 1) * fanout)] { hasher.update(data: b.bytes) }
            return Array(hasher.finalize())
        }
    }

    public static func root(inner: [[UInt8]]) -> [UInt8] {
        var hasher = SHA256()
        for node in inner { hasher.update(data: node) }
        return Array(hasher.finalize())
    }

    public static func root(_ buckets: [BucketSum]) -> [UInt8] { root(inner: innerNodes(buckets)) }
}

/// A 256-bit unsigned integer, added and subtracted modulo 2^256.
public struct BucketSum: Sendable, Hashable {
    public var limbs: (UInt64, UInt64, UInt64, UInt64)  // little-endian limbs

    public static let zero = BucketSum(limbs: (0, 0, 0, 0))

    public init(limbs: (UInt64, UInt64, UInt64, UInt64)) { self.limbs = limbs }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32)
        func limb(_ i: Int) -> UInt64 { bytes[(i * 8)..<(i * 8 + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        limbs = (limb(3), limb(2), limb(1), limb(0))
    }

    init(digest: SHA256.Digest) {
        limbs = digest.withUnsafeBytes { raw in
            func limb(_ i: Int) -> UInt64 { UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
            return (limb(3), limb(2), limb(1), limb(0))
        }
    }

    /// The SHA-256 of `bytes` as a bucket summand, without an intermediate array.
    public static func hashing(_ bytes: UnsafeRawBufferPointer) -> BucketSum {
        BucketSum(digest: SHA256.hash(data: bytes))
    }

    /// Big-endian bytes.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for l in [limbs.3, limbs.2, limbs.1, limbs.0] { withUnsafeBytes(of: l.bigEndian) { out.append(contentsOf: $0) } }
        return out
    }

    public static func + (a: BucketSum, b: BucketSum) -> BucketSum {
        let (r0, c0) = a.limbs.0.addingReportingOverflow(b.limbs.0)
        var (r1, c1) = a.limbs.1.addingReportingOverflow(b.limbs.1)
        if c0 { let (x, c) = r1.addingReportingOverflow(1); r1 = x; c1 = c1 || c }
        var (r2, c2) = a.limbs.2.addingReportingOverflow(b.limbs.2)
        if c1 { let (x, c) = r2.addingReportingOverflow(1); r2 = x; c2 = c2 || c }
        var r3 = a.limbs.3 &+ b.limbs.3
        if c2 { r3 = r3 &+ 1 }
        return BucketSum(limbs: (r0, r1, r2, r3))
    }

    public static prefix func - (a: BucketSum) -> BucketSum {
        BucketSum(limbs: (~a.limbs.0, ~a.limbs.1, ~a.limbs.2, ~a.limbs.3)) + BucketSum(limbs: (1, 0, 0, 0))
    }

    public static func - (a: BucketSum, b: BucketSum) -> BucketSum { a + (-b) }

    public static func == (a: BucketSum, b: BucketSum) -> Bool {
        a.limbs.0 == b.limbs.0 && a.limbs.1 == b.limbs.1 && a.limbs.2 == b.limbs.2 && a.limbs.3 == b.limbs.3
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(limbs.0)
        hasher.combine(limbs.1)
        hasher.combine(limbs.2)
        hasher.combine(limbs.3)
    }
}
