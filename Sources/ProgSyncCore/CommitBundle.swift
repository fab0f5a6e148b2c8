import CZlib
import Crypto

/// A bundle carries commits by hand between nodes that have no network (§10). The file is
///
///     "progsync-bundle 2\n"
///     one gzip stream of:
///         header (canonical JSON) "\n"
///         per commit: body length (u32, big-endian), body, 64-byte signature
///     seal: SHA-256 of every byte above (32 bytes), then the exporting node's Ed25519
///           signature over `sealDomain` + that SHA-256 (64 bytes)
///
/// The header names the exporting node and its version vector. The SHA-256 covers the whole
/// file before it, so any cut or changed byte refuses the whole bundle before anything is
/// decompressed. The signature makes the header (and so the version vector an importer will
/// remember as "what that node holds") the exporter's word; the importer checks it against the
/// registry's key. The commits inside are signed by their origins and verified on import like
/// any others, whoever wrote the file.
///
/// Format 1 (before bundles were signed) is still read: the same stream without the seal, with
/// a SHA-256 of the content as the stream's last 32 bytes. Its header cannot be authenticated.
public struct CommitBundle: Sendable {
    public static let magic = Array("progsync-bundle 2\n".utf8)
    package static let unsignedMagic = Array("progsync-bundle 1\n".utf8)
    /// What the seal's signature covers besides the digest, so it can never pass for a commit
    /// signature (those cover canonical JSON, which starts with `{`).
    static let sealDomain = Array("progsync bundle seal 2\n".utf8)
    static let sealCount = 32 + 64
    static let maxHeaderBytes = 1 << 20

    /// How far a bundle may expand; checked while decompressing, so a small file that inflates to
    /// gigabytes (a gzip bomb) stops at the bound instead of filling memory.
    public struct Limits: Sendable {
        /// The most uncompressed bytes, whatever the file's size.
        public var maxBytes: Int
        /// The most uncompressed bytes per compressed byte. Real bundles expand 2–6 times:
        /// signatures and hashes do not compress.
        public var maxRatio: Int
        /// Small files may expand this far whatever the ratio.
        public var ratioFreeBytes: Int

        public init(maxBytes: Int = 1 << 30, maxRatio: Int = 32, ratioFreeBytes: Int = 1 << 20) {
            self.maxBytes = maxBytes
            self.maxRatio = maxRatio
            self.ratioFreeBytes = ratioFreeBytes
        }

        func allowance(compressed: Int) -> Int {
            min(maxBytes, max(ratioFreeBytes, compressed.multipliedReportingOverflow(by: maxRatio).partialValue))
        }
    }

    public var header: JSONValue
    public var commits: [(body: [UInt8], signature: [UInt8])]
    /// The file's digest and the exporter's signature over it; nil for a format-1 bundle.
    public private(set) var seal: (digest: [UInt8], signature: [UInt8])?

    public init(header: JSONValue, commits: [(body: [UInt8], signature: [UInt8])]) {
        self.header = header
        self.commits = commits
    }

    /// The node the header says wrote the bundle; a decoded bundle always names one.
    public var exporter: NodeID? { header["node"]?.stringValue.flatMap(NodeID.init) }

    /// The exporter's version vector from the header. Trust it only when `isSealed(by:)` holds
    /// for the exporter's registered key.
    public var versionVector: [NodeID: UInt64] { CommitWire.versionVector(header["versionVector"]) }

    /// Whether the seal is a valid signature by `key` (false for a format-1 bundle).
    public func isSealed(by key: Curve25519.Signing.PublicKey) -> Bool {
        guard let seal else { return false }
        return key.isValidSignature(seal.signature, for: Self.sealDomain + seal.digest)
    }

    public func encoded(signedBy identity: NodeIdentity) throws(BundleError) -> [UInt8] {
        var deflater = try Gzip.Deflater()
        try deflater.write(header.canonicalBytes + [UInt8(ascii: "\n")])
        for c in commits { try deflater.write(Self.record(c)) }
        let file = Self.magic + (try deflater.finish())
        return file + (try Self.seal(file, signedBy: identity))
    }

    /// The SHA-256 of `file` and the signature over it, to append to it.
    static func seal(_ file: [UInt8], signedBy identity: NodeIdentity) throws(BundleError) -> [UInt8] {
        let digest = sha256(file[...])
        do { return digest + (try identity.sign(sealDomain + digest)) } catch { throw BundleError("cannot sign the bundle: \(error)") }
    }

    static func record(_ commit: (body: [UInt8], signature: [UInt8])) -> [UInt8] {
        let n = UInt32(commit.body.count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + commit.body + commit.signature
    }

    static func sha256(_ bytes: ArraySlice<UInt8>) -> [UInt8] { Array(SHA256.hash(data: bytes)) }

    /// The uncompressed content of a format-1 bundle, before its checksum.
    var format1Content: [UInt8] { commits.reduce(header.canonicalBytes + [UInt8(ascii: "\n")]) { $0 + Self.record($1) } }

    /// The format progsync wrote before bundles were signed; kept so tests can check that such
    /// files still import (their header is not trusted).
    package func encodedFormat1() throws(BundleError) -> [UInt8] {
        var deflater = try Gzip.Deflater()
        try deflater.write(format1Content + Self.sha256(format1Content[...]))
        return Self.unsignedMagic + (try deflater.finish())
    }

    /// Decodes a whole bundle or refuses it; nothing is returned from a damaged file. Does not
    /// check the seal's signature: that needs the registry (`isSealed(by:)`).
    public init(decoding file: [UInt8], limits: Limits = Limits()) throws(BundleError) {
        let sealed: Bool
        if file.starts(with: Self.magic) {
            sealed = true
        } else if file.starts(with: Self.unsignedMagic) {
            sealed = false
        } else {
            throw BundleError("not a progsync bundle (it does not start with \"progsync-bundle 2\" or 1)")
        }
        var end = file.count
        if sealed {
            guard file.count >= Self.magic.count + Self.sealCount else { throw BundleError("bundle is truncated: no seal") }
            end -= Self.sealCount
            let digest = Array(file[end..<(end + 32)])
            guard Self.sha256(file[0..<end]) == digest else {
                throw BundleError("bundle checksum does not match: the file was altered or truncated")
            }
            seal = (digest, Array(file[(end + 32)...]))
        }
        let parsed = try file.withUnsafeBufferPointer { buffer throws(BundleError) in
            let body = UnsafeBufferPointer(rebasing: buffer[Self.magic.count..<end])
            var reader = try Gzip.Reader(body, limits: limits, checksummingContent: !sealed)
            return try Self.parse(&reader, contentChecksum: !sealed)
        }
        header = parsed.header
        commits = parsed.commits
    }

    private static func parse(_ reader: inout Gzip.Reader, contentChecksum: Bool) throws(BundleError)
        -> (header: JSONValue, commits: [(body: [UInt8], signature: [UInt8])])
    {
        let line = try reader.line(max: maxHeaderBytes)
        let header: JSONValue
        do { header = try JSONParser.parse(line, maxDepth: 8) } catch { throw BundleError("bundle header is not valid JSON: \(error)") }
        guard header["node"]?.stringValue.flatMap(NodeID.init) != nil else { throw BundleError("bundle header names no exporting node") }
        // Format 1 ends with a SHA-256 of the content: stop 32 bytes before the end.
        let trailer = contentChecksum ? 32 : 0
        var commits: [(body: [UInt8], signature: [UInt8])] = []
        while try reader.hasMore(than: trailer) {
            let number = commits.count + 1
            let length = try reader.read(4, else: "bundle is truncated inside commit \(number)")
            let n = length.reduce(0) { $0 << 8 | Int($1) }
            guard n > 0 else { throw BundleError("commit \(number) of the bundle is empty") }
            let body = try reader.read(n, else: "bundle is truncated inside commit \(number)")
            let signature = try reader.read(64, else: "bundle is truncated inside commit \(number)")
            commits.append((body, signature))
        }
        if contentChecksum {
            guard let sum = reader.finishContentChecksum(), reader.available == 32 else { throw BundleError("bundle is truncated: no checksum") }
            guard sum == (try reader.read(32, else: "bundle is truncated: no checksum")) else {
                throw BundleError("bundle checksum does not match: the file was altered")
            }
        }
        return (header, commits)
    }
}

public struct BundleError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// gzip through zlib, a piece at a time in both directions.
package enum Gzip {
    static let chunk = 1 << 16

    /// Compresses what is written to it into one gzip stream.
    package struct Deflater: ~Copyable {
        // zlib keeps a pointer back to its z_stream: it must not move, so it lives on the heap.
        private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        private var output: [UInt8] = []

        package init(level: Int32 = 6) throws(BundleError) {
            stream.initialize(to: z_stream())
            guard progsync_deflate_init_gzip(stream, level) == Z_OK else {
                stream.deallocate()
                throw BundleError("zlib: cannot start compressing")
            }
        }

        deinit {
            deflateEnd(stream)
            stream.deallocate()
        }

        package mutating func write(_ bytes: [UInt8]) throws(BundleError) { try run(bytes, flush: Z_NO_FLUSH) }

        package consuming func finish() throws(BundleError) -> [UInt8] {
            try run([], flush: Z_FINISH)
            return output
        }

        private mutating func run(_ input: [UInt8], flush: Int32) throws(BundleError) {
            var scratch = [UInt8](repeating: 0, count: Gzip.chunk)
            let stream = stream
            var status: Int32 = Z_OK
            input.withUnsafeBufferPointer { src in
                stream.pointee.next_in = UnsafeMutablePointer(mutating: src.baseAddress)
                stream.pointee.avail_in = uInt(src.count)
                repeat {
                    let produced = scratch.withUnsafeMutableBufferPointer { dst in
                        stream.pointee.next_out = dst.baseAddress
                        stream.pointee.avail_out = uInt(dst.count)
                        status = deflate(stream, flush)
                        return dst.count - Int(stream.pointee.avail_out)
                    }
                    output.append(contentsOf: scratch[0..<produced])
                } while status == Z_OK && (stream.pointee.avail_out == 0 || stream.pointee.avail_in > 0 || (flush == Z_FINISH))
            }
            stream.pointee.next_in = nil
            let done = flush == Z_FINISH ? Z_STREAM_END : Z_OK
            guard status == done || (status == Z_BUF_ERROR && flush != Z_FINISH) else { throw BundleError("zlib: compression failed (\(status))") }
        }
    }

    /// Reads one gzip stream in pieces as a parser asks for them, refusing to inflate more than
    /// `limit` bytes in all. Consumed bytes are dropped, so memory holds what the parser keeps.
    struct Reader: ~Copyable {
        private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        private var window: [UInt8] = []
        private var start = 0
        private var inflated = 0
        private var ended = false
        private let limit: Int
        private let limits: CommitBundle.Limits
        private let compressed: Int
        private var checksum: SHA256?

        init(_ input: UnsafeBufferPointer<UInt8>, limits: CommitBundle.Limits, checksummingContent: Bool) throws(BundleError) {
            stream.initialize(to: z_stream())
            guard progsync_inflate_init_gzip(stream) == Z_OK else {
                stream.deallocate()
                throw BundleError("zlib: cannot start decompressing")
            }
            stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.pointee.avail_in = uInt(input.count)
            compressed = input.count
            limit = limits.allowance(compressed: input.count)
            self.limits = limits
            checksum = checksummingContent ? SHA256() : nil
        }

        deinit {
            inflateEnd(stream)
            stream.deallocate()
        }

        var available: Int { window.count - start }

        /// Inflates until `count` bytes are waiting or the stream has ended.
        private mutating func fill(_ count: Int) throws(BundleError) {
            if start > 1 << 20, start > window.count / 2 {
                window.removeFirst(start)
                start = 0
            }
            var scratch = [UInt8](repeating: 0, count: Gzip.chunk)
            while available < count, !ended {
                var status: Int32 = Z_OK
                let produced = scratch.withUnsafeMutableBufferPointer { dst in
                    stream.pointee.next_out = dst.baseAddress
                    stream.pointee.avail_out = uInt(dst.count)
                    status = inflate(stream, Z_NO_FLUSH)
                    return dst.count - Int(stream.pointee.avail_out)
                }
                inflated += produced
                if inflated > limit { throw tooLarge() }
                window.append(contentsOf: scratch[0..<produced])
                switch status {
                case Z_STREAM_END:
                    guard stream.pointee.avail_in == 0 else { throw BundleError("bundle has extra bytes after its end") }
                    ended = true
                case Z_OK: break
                case Z_BUF_ERROR where stream.pointee.avail_in == 0:
                    throw BundleError("bundle is truncated: the compressed data ends early")
                case Z_DATA_ERROR:
                    throw BundleError("bundle is damaged: \(stream.pointee.msg.map { String(cString: $0) } ?? "corrupt compressed data")")
                default: throw BundleError("bundle cannot be decompressed (zlib \(status))")
                }
            }
        }

        private func tooLarge() -> BundleError {
            if limit == limits.maxBytes { return BundleError("bundle is larger than \(limits.maxBytes >> 20) MiB uncompressed") }
            return BundleError("bundle expands more than \(limits.maxRatio) times its \(compressed) compressed bytes: refused as a likely decompression bomb")
        }

        /// Whether more than `count` bytes remain before the end of the stream.
        mutating func hasMore(than count: Int) throws(BundleError) -> Bool {
            try fill(count + 1)
            return available > count
        }

        /// Exactly `count` bytes, or `message` if the stream ends first.
        mutating func read(_ count: Int, else message: @autoclosure () -> String) throws(BundleError) -> [UInt8] {
            // Grow by what actually inflates, never by a length the file claims.
            while available < count, !ended { try fill(min(count, available + Gzip.chunk)) }
            guard available >= count else { throw BundleError(message()) }
            let bytes = Array(window[start..<(start + count)])
            start += count
            checksum?.update(data: bytes)
            return bytes
        }

        /// The bytes up to a newline (which is consumed), at most `max` of them.
        mutating func line(max: Int) throws(BundleError) -> [UInt8] {
            var scanned = 0
            while true {
                if let newline = window[(start + scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = try read(newline - start, else: "bundle has no header")
                    _ = try read(1, else: "bundle has no header")
                    return line
                }
                scanned = available
                guard scanned <= max else { throw BundleError("bundle header is longer than \(max >> 10) KiB") }
                guard !ended else { throw BundleError("bundle has no header") }
                try fill(available + 1)
            }
        }

        /// The SHA-256 of everything read so far (format 1's trailer); ends the running sum.
        mutating func finishContentChecksum() -> [UInt8]? {
            defer { checksum = nil }
            return checksum.map { Array($0.finalize()) }
        }
    }
}
