import Foundation
import Hummingbird
import Logging
import NIOCore
import ProgSyncCore
import ProgSyncStore

struct PeerRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The connection, to tell which partner is calling (its certificate).
    let channel: (any Channel)?
    /// The caller's certificate pin, read once per request by `PartnerCertificateMiddleware`;
    /// nil without TLS (plain HTTP on loopback, in tests).
    var partnerPin: String?
    /// The active partner node that pin belongs to, found once by `PeerMembershipMiddleware`; nil
    /// for a stranger on the join route, and without TLS.
    var partnerNode: NodeID?
    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
    /// Who is calling, for per-partner caps and logs: its pin, else its address.
    var caller: String { partnerPin ?? channel?.remoteAddress?.ipAddress ?? "unknown" }
    var maxUploadSize: Int { 256 << 20 }
}

/// The peer API under `/v1/peer/` (§8): hello, pull with a cursor and long poll, and push. It
/// serves every commit the node holds, whoever made it, so chains and hubs converge too.
struct PeerAPI: Sendable, PartnerCommitIntake {
    static let maxBatchBytes = 4 << 20
    static let maxRange = 5000
    let replica: Replica
    let node: NodeFiles.StoredIdentity
    let events: EventBroadcaster
    let limits: DaemonConfiguration.PeerLimits
    let audit: AuditLog
    let logger: Logger
    let metrics: DaemonMetrics
    /// Buckets per `POST /v1/peer/digest/entries`: each request scans the replica's fields once
    /// and answers their entries, so a partner pages through a larger set.
    static let maxEntriesBuckets = 256

    func addRoutes(to router: Router<PeerRequestContext>) {
        router.get("/v1/peer/hello") { _, _ in self.hello() }
        router.get("/v1/peer/commits") { request, _ in try await self.pull(request) }
        router.post("/v1/peer/commits") { request, context in try await self.push(request, context) }
        router.get("/v1/peer/commits/range") { request, _ in try await self.range(request) }
        router.get("/v1/peer/digest") { _, _ in self.digest() }
        router.get("/v1/peer/digest/buckets") { request, _ in try self.buckets(request) }
        router.post("/v1/peer/digest/entries") { request, _ in try await self.entries(request) }
    }

    func hello() -> Response {
        JSONResponse.make(.object([
            "node": .string(node.identity.id.rawValue), "org": .string(node.org), "name": .string(node.name ?? ""),
            "protocol": .int(Int64(PeerProtocol.local.version)), "minProtocol": .int(Int64(PeerProtocol.local.minimum)),
            "schema": .int(Int64(replica.configuration.schemaVersion)), "clock": .string(replica.clock.hex),
            "versionVector": Self.vectorJSON(replica.versionVector), "lastLSN": .int((try? replica.lastLSN) ?? 0),
            "digest": .string(Hex.encode(replica.digestRoot)),
        ]))
    }

    /// One origin's commits by seq range: reconciliation fills gaps with it.
    func range(_ request: Request) async throws -> Response {
        let q = request.uri.queryParameters
        guard let origin = q["origin"].flatMap({ NodeID(String($0)) }) else { throw APIError.badRequest("origin must be a node id") }
        // Within the seqs a commit can have, so `from + maxRange` cannot overflow either.
        guard let from = q["from"].flatMap({ UInt64(String($0)) }), let to = q["to"].flatMap({ UInt64(String($0)) }), from <= to,
            CommitRules.seqRange.contains(from), CommitRules.seqRange.contains(to)
        else { throw APIError.badRequest("from and to must be seqs with 1 ≤ from ≤ to < 2^63") }
        let upper = min(to, from + UInt64(Self.maxRange) - 1)
        let stored = try await replica.reading { try $0.rawCommits(origin: origin, seqs: from...upper) }
        return JSONResponse.make(.object(["commits": .array(stored.map { CommitWire.json(body: $0.body, signature: $0.signature) })]))
    }

    func digest() -> Response {
        let inner = ReplicaDigest.innerNodes(replica.digestBuckets)
        return JSONResponse.make(.object([
            "root": .string(Hex.encode(ReplicaDigest.root(inner: inner))), "inner": .array(inner.map { .string(Hex.encode($0)) }),
        ]))
    }

    /// The bucket sums under the given inner nodes.
    func buckets(_ request: Request) throws -> Response {
        let text = request.uri.queryParameters["inner"].map(String.init) ?? ""
        let inner = try text.split(separator: ",").map { part -> Int in
            guard let i = Int(part), (0..<(ReplicaDigest.bucketCount / ReplicaDigest.fanout)).contains(i) else {
                throw APIError.badRequest("inner must list inner node numbers from 0 to \(ReplicaDigest.bucketCount / ReplicaDigest.fanout - 1)")
            }
            return i
        }
        let sums = replica.digestBuckets
        var out: [JSONValue] = []
        for i in Set(inner).sorted() {
            for b in (i * ReplicaDigest.fanout)..<((i + 1) * ReplicaDigest.fanout) {
                out.append(.object(["bucket": .int(Int64(b)), "sum": .string(Hex.encode(sums[b].bytes))]))
            }
        }
        return JSONResponse.make(.object(["buckets": .array(out)]))
    }

    /// The entries of the given buckets: `[record, field, stamp, origin, seq, hash, isLoser]`.
    func entries(_ request: Request) async throws -> Response {
        let body = try await Self.jsonBody(request, limit: 1 << 20, maxDepth: 4)
        guard let list = body["buckets"]?.arrayValue else { throw APIError.badRequest("buckets must be a list of bucket numbers") }
        guard list.count <= Self.maxEntriesBuckets else {
            throw APIError(.contentTooLarge, "too-large", "at most \(Self.maxEntriesBuckets) buckets per request")
        }
        var buckets = Set<Int>()
        for item in list {
            guard let b = item.intValue.map(Int.init), (0..<ReplicaDigest.bucketCount).contains(b) else {
                throw APIError.badRequest("buckets must be numbers from 0 to \(ReplicaDigest.bucketCount - 1)")
            }
            buckets.insert(b)
        }
        let entries = try await replica.reading { [buckets] in try $0.digestEntries(buckets: buckets) }.map { e -> JSONValue in
            .array([.string(e.record), .string(e.field), .string(e.stamp.hex), .string(e.origin), .int(Int64(e.seq)), .string(Hex.encode(e.hash)),
                    .bool(e.isLoser)])
        }
        return JSONResponse.make(.object(["entries": .array(entries)]))
    }

    static func vectorJSON(_ vector: [NodeID: UInt64]) -> JSONValue {
        .object(Dictionary(uniqueKeysWithValues: vector.map { ($0.key.rawValue, JSONValue.int(Int64($0.value))) }))
    }

    func pull(_ request: Request) async throws -> Response {
        let q = request.uri.queryParameters
        guard let since = Int64(q["since"].map(String.init) ?? "0"), since >= 0 else { throw APIError.badRequest("since must be a cursor ≥ 0") }
        let limit = Int(q["limit"].map(String.init) ?? "1000") ?? -1
        guard (1...limits.maxBatch).contains(limit) else { throw APIError.badRequest("limit must be from 1 to \(limits.maxBatch)") }
        let wait = Int(q["wait"].map(String.init) ?? "0") ?? -1
        guard (0...limits.maxWaitSeconds).contains(wait) else { throw APIError.badRequest("wait must be from 0 to \(limits.maxWaitSeconds) seconds") }
        var stored = try await replica.reading { try $0.rawCommits(afterLSN: since, limit: limit) }
        if stored.isEmpty, wait > 0 {
            await events.waitForCommits(after: since, timeout: .seconds(wait))
            stored = try await replica.reading { try $0.rawCommits(afterLSN: since, limit: limit) }
        }
        // Batches are bounded in bytes too, so a peer catching up gets a stream of moderate batches
        // it can apply while the next one travels, whatever the commit sizes.
        stored = Array(stored.prefix(bodyBytes: Self.maxBatchBytes))
        let cursor = stored.last?.lsn ?? since
        let last = try replica.lastLSN
        return JSONResponse.make(.object([
            "commits": .array(stored.map { CommitWire.json(body: $0.body, signature: $0.signature) }), "cursor": .int(cursor),
            "more": .bool(cursor < last), "lastLSN": .int(last),
        ]))
    }

    func push(_ request: Request, _ context: PeerRequestContext) async throws -> Response {
        let body = try await Self.collect(request, limit: limits.maxPushBytes)
        let commits: [SignedCommit]
        do {
            commits = try body.withUnsafeReadableBytes { bytes in
                try CommitWire.decodeBatch(json: bytes.bindMemory(to: UInt8.self), maxCommits: limits.maxBatch)
            }
        } catch {
            throw APIError.badRequest("\(error)")
        }
        let channel = "push:\(context.partnerNode?.rawValue ?? context.caller)"
        let report = try await merge(from: channel) { try $0.apply(commits) }
        return JSONResponse.make(PeerAPI.reportJSON(report, vector: replica.versionVector))
    }

    static func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        do { return try await request.body.collect(upTo: limit) } catch {
            throw APIError(.contentTooLarge, "too-large", "request larger than \(limit) bytes")
        }
    }

    static func jsonBody(_ request: Request, limit: Int, maxDepth: Int) async throws -> JSONValue {
        let buffer = try await collect(request, limit: limit)
        do { return try JSONParser.parse(Array(buffer.readableBytesView), maxDepth: maxDepth) } catch {
            throw APIError.badRequest("malformed JSON: \(error)")
        }
    }

    static func reportJSON(_ report: ApplyReport, vector: [NodeID: UInt64]) -> JSONValue {
        .object([
            "applied": .int(Int64(report.applied)), "duplicates": .int(Int64(report.duplicates)),
            "held": .int(Int64(report.held.count)), "rejected": .int(Int64(report.rejected.count)),
            "versionVector": vectorJSON(vector),
        ])
    }
}

extension Collection where Element == Replica.RawCommit {
    /// The longest prefix within `maxBytes` of commit bodies, and at least one commit, so that
    /// pull answers and pushes stay moderate whatever the commit sizes.
    func prefix(bodyBytes maxBytes: Int) -> SubSequence {
        var bytes = 0
        let cut = firstIndex { c in bytes += c.body.count; return bytes > maxBytes } ?? endIndex
        return prefix(upTo: cut == startIndex && !isEmpty ? index(after: startIndex) : cut)
    }
}
