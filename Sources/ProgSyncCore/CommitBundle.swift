import CZlib
import Crypto

/// A bundle carries commits by hand between nodes that have no network (§10). The file is a
/// magic line followed by one gzip stream of:
///
///     header (canonical JSON) "\n"
///     per commit: body length (u32, big-endian), body, 64-byte signature
///     SHA-256 of everything above
///
/// The header names the exporting node and its version vector. gzip's CRC and length catch a
/// damaged or cut file, the SHA-256 trailer an altered one; either refuses the whole bundle.
/// The commits inside are signed by their origins and verified on import like any others.
public struct CommitBundle: Sendable {
    public static let magic = Array("progsync-bundle 1\n".utf8)
    public static let maxUncompressedBytes = 2 << 30

    public var header: JSONValue
    public var commits: [(body: [UInt8], signature: [UInt8])]

    public init(header: JSONValue, commits: [(body: [UInt8], signature: [UInt8])]) {
        self.header = header
        self.commits = commits
    }

    public func encoded() throws(BundleError) -> [UInt8] {
        var payload = header.canonicalBytes
        payload.append(UInt8(ascii: "\n"))
        for c in commits {
            let n = UInt32(c.body.count)
            payload.append(contentsOf: [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)])
            payload.append(contentsOf: c.body)
            payload.append(contentsOf: c.signature)
        }
        payload.append(contentsOf: SHA256.hash(data: payload))
        return Self.magic + (try Gzip.compress(payload))
    }

    /// Decodes a whole bundle or refuses it; nothing is returned from a damaged file.
    public init(decoding file: [UInt8]) throws(BundleError) {
        guard file.count > Self.magic.count, Array(file[0..<Self.magic.count]) == Self.magic else {
            throw BundleError("not a progsync bundle (it does not start with \"progsync-bundle 1\")")
        }
        let payload = try Gzip.decompress(file[Self.magic.count...], limit: Self.maxUncompressedBytes)
        guard payload.count >= 32 else { throw BundleError("bundle is truncated: no checksum") }
        let content = payload[0..<(payload.count - 32)]
        guard Array(SHA256.hash(data: content)) == Array(payload[(payload.count - 32)...]) else {
            throw BundleError("bundle checksum does not match: the file was altered")
        }
        guard let newline = content.firstIndex(of: UInt8(ascii: "\n")) else { throw BundleError("bundle has no header") }
        do {
            header = try JSONParser.parse(Array(content[content.startIndex..<newline]), maxDepth: 8)
        } catch {
            throw BundleError("bundle header is not valid JSON: \(error)")
        }
        var commits: [(body: [UInt8], signature: [UInt8])] = []
        var i = newline + 1
        while i < content.endIndex {
            guard content.endIndex - i >= 4 else { throw BundleError("bundle is truncated inside commit \(commits.count + 1)") }
            let n = content[i..<(i + 4)].reduce(0) { $0 << 8 | Int($1) }
            i += 4
            guard content.endIndex - i >= n + 64 else { throw BundleError("bundle is truncated inside commit \(commits.count + 1)") }
            commits.append((Array(content[i..<(i + n)]), Array(content[(i + n)..<(i + n + 64)])))
            i += n + 64
        }
        self.commits = commits
    }
}

public struct BundleError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// gzip through zlib, whole buffers at a time.
enum Gzip {
    static func compress(_ input: [UInt8]) throws(BundleError) -> [UInt8] {
        var stream = z_stream()
        guard progsync_deflate_init_gzip(&stream, 6) == Z_OK else { throw BundleError("zlib: cannot start compressing") }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(input.count))) + 64)
        let status: Int32 = input.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                stream.next_in = UnsafeMutablePointer(mutating: src.baseAddress)
                stream.avail_in = uInt(src.count)
                stream.next_out = dst.baseAddress
                stream.avail_out = uInt(dst.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { throw BundleError("zlib: compression failed (\(status))") }
        output.removeSubrange(Int(stream.total_out)...)
        return output
    }

    static func decompress(_ input: ArraySlice<UInt8>, limit: Int) throws(BundleError) -> [UInt8] {
        var stream = z_stream()
        guard progsync_inflate_init_gzip(&stream) == Z_OK else { throw BundleError("zlib: cannot start decompressing") }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        let input = Array(input)
        var status: Int32 = Z_OK
        input.withUnsafeBufferPointer { src in
            stream.next_in = UnsafeMutablePointer(mutating: src.baseAddress)
            stream.avail_in = uInt(src.count)
            while status == Z_OK {
                let produced: Int = chunk.withUnsafeMutableBufferPointer { dst in
                    stream.next_out = dst.baseAddress
                    stream.avail_out = uInt(dst.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return dst.count - Int(stream.avail_out)
                }
                output.append(contentsOf: chunk[0..<produced])
                if output.count > limit { status = Z_MEM_ERROR; return }
                if status == Z_BUF_ERROR, stream.avail_in == 0 { return }
            }
        }
        switch status {
        case Z_STREAM_END:
            guard stream.avail_in == 0 else { throw BundleError("bundle has extra bytes after its end") }
            return output
        case Z_BUF_ERROR: throw BundleError("bundle is truncated: the compressed data ends early")
        case Z_MEM_ERROR where output.count > limit: throw BundleError("bundle is larger than \(limit >> 20) MiB uncompressed")
        case Z_DATA_ERROR: throw BundleError("bundle is damaged: \(stream.msg.map { String(cString: $0) } ?? "corrupt compressed data")")
        default: throw BundleError("bundle cannot be decompressed (zlib \(status))")
        }
    }
}
