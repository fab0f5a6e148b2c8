import Dispatch
import Foundation
import Hummingbird
import NIOCore
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// Offline work (§10) and reconciliation (§9) on the local API: bundles, what each partner is
/// waiting for, and the reconciliation runs and their reports.
extension LocalAPI {
    // MARK: Connectivity

    /// Online when a replicator is up or a partner called us in the last minute. `waiting` counts,
    /// per partner node, the commits we hold that it lacks by the last vector it told us.
    func connectivityJSON() throws -> JSONValue {
        let now = Replica.wallClockMilliseconds()
        let up = peers.filter { $0.status.withLock { $0.shownState(now: now) == "up" } }
        let lastInbound = inbound.last.withLock { $0 }
        let lastContact = ([lastInbound] + peers.map { $0.status.withLock { $0.lastContact } }).compactMap { $0 }.max()
        let online = !up.isEmpty || (lastInbound.map { now - min(now, $0) < 60_000 } ?? false)
        var waiting: [JSONValue] = []
        for node in replica.registry.nodes.values.sorted(by: { $0.id < $1.id }) where node.id != replica.nodeID {
            let known = try replica.knownVector(of: node.id)
            var o: [String: JSONValue] = [
                "name": .string(node.name ?? node.id.rawValue), "node": .string(node.id.rawValue), "org": .string(node.org),
                "commits": .int(Int64(replica.missingCount(from: known?.vector ?? [:]))),
            ]
            o["knownAsOf"] = known.map { .string(Stamp.iso8601(milliseconds: $0.at)) } ?? .null
            waiting.append(.object(o))
        }
        return .object([
            "online": .bool(online), "peersUp": .int(Int64(up.count)), "peersConfigured": .int(Int64(peers.count)),
            "lastContact": lastContact.map { .string(Stamp.iso8601(milliseconds: $0)) } ?? .null,
            "waiting": .array(waiting),
        ])
    }

    /// A partner node by registry name, node id or org code (when the org has one node).
    func partner(_ name: String) throws -> PartnerRegistry.Node {
        let others = replica.registry.nodes.values.filter { $0.id != replica.nodeID }
        if let n = others.first(where: { $0.name == name || $0.id.rawValue == name }) { return n }
        let byOrg = others.filter { $0.org == name }
        if byOrg.count == 1 { return byOrg[0] }
        if byOrg.count > 1 { throw APIError.badRequest("org \(name) has \(byOrg.count) nodes; name one: \(byOrg.map { $0.name ?? $0.id.rawValue }.joined(separator: ", "))") }
        throw APIError.notFound("no partner node \(name) in the registry (names: \(others.compactMap(\.name).sorted().joined(separator: ", ")))")
    }

    // MARK: Bundles

    /// `GET /v1/bundle?peer=NAME | since=STAMP | all=true`: the bundle file's bytes.
    func exportBundle(_ request: Request) async throws -> Response {
        let q = request.formParameters
        // Exactly one parameter: a misspelt or extra one is refused, never ignored, since what
        // the file holds depends on it.
        let pairs = (request.uri.query ?? "").split(separator: "&").count
        guard pairs == 1, q.count == 1, let key = q.keys.first, ["peer", "since", "all"].contains(key), key != "all" || q["all"] == "true" else {
            throw APIError.badRequest("give exactly one of peer=NAME, since=MOMENT or all=true")
        }
        let peer = q["peer"], since = q["since"]
        let (bytes, count) = try await Self.onBundleQueue { try self.bundleFile(peer: peer, since: since) }
        return Response(status: .ok, headers: [.contentType: "application/octet-stream", .init("X-Progsync-Commits")!: "\(count)"],
                        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Reads, compresses and signs: blocking work for the bundle queue.
    private func bundleFile(peer: String?, since: String?) throws -> (bytes: [UInt8], commits: Int) {
        var filter: [String: JSONValue] = [:]
        let commits: [Replica.RawCommit]
        if let peer {
            let node = try partner(peer)
            let known = try replica.knownVector(of: node.id)
            commits = try replica.rawCommits(missingFrom: known?.vector ?? [:])
            filter = ["peer": .string(node.name ?? node.id.rawValue), "node": .string(node.id.rawValue),
                      "knownAsOf": known.map { .string(Stamp.iso8601(milliseconds: $0.at)) } ?? .null]
        } else if let since {
            guard let stamp = Self.parseStamp(since) else {
                throw APIError.badRequest(Self.sinceHelp)
            }
            commits = try replica.rawCommits(stampedSince: stamp)
            filter = ["since": .string(stamp.description)]
        } else {
            commits = try replica.rawCommits(stampedSince: nil)
            filter = ["all": .bool(true)]
        }
        let header = JSONValue.object([
            "node": .string(replica.nodeID.rawValue), "org": .string(node.org), "name": .string(node.name ?? ""),
            "created": .string(Stamp.iso8601(milliseconds: Replica.wallClockMilliseconds())),
            "versionVector": PeerAPI.vectorJSON(replica.versionVector), "commits": .int(Int64(commits.count)),
            "filter": .object(filter),
        ])
        let bytes = try CommitBundle(header: header, commits: commits.map { ($0.body, $0.signature) }).encoded(signedBy: replica.identity)
        return (bytes, commits.count)
    }

    static let sinceHelp = "since must be a date (from its start in UTC: 2026-11-20), an RFC 3339 instant (2026-11-20T08:00:00Z), "
        + "or a stamp (16 hex digits, as status shows)"

    /// `since` on the audit and bundle routes: a stamp, a date (its start in UTC) or an instant.
    static func parseStamp(_ text: String) -> Stamp? {
        if let s = Stamp(hex: text) { return s }
        let ms: Int64
        switch WrittenMoment(text) {
        case .date(let days)?: ms = Int64(days) * 86_400_000  // the start of that day in UTC
        case .instant(let instant)?: ms = instant
        case nil: return nil
        }
        // Before 1970 is before every commit.
        return Stamp(milliseconds: UInt64(max(0, ms)), counter: 0)
    }

    /// Bundle files are read, written, decompressed and applied here, one at a time: never on the
    /// cooperative pool (it is CPU and fsync work), and never two large files in memory at once.
    static let bundleQueue = DispatchQueue(label: "progsync.bundles")

    static func onBundleQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await bundleQueue.perform(body)
    }

    /// `POST /v1/bundle`: verifies the whole file first, then applies every commit through the
    /// same path as the network, in one transaction.
    func importBundle(_ request: Request, _ context: LocalRequestContext) async throws -> Response {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: limits.maxBundleBytes) } catch {
            throw APIError(.contentTooLarge, "too-large", "bundle larger than \(limits.maxBundleBytes >> 20) MiB")
        }
        let file = Array(buffer.readableBytesView)
        let replica = replica, bundleLimits = CommitBundle.Limits(maxBytes: limits.maxBundleBytes)
        let result: BundleImport
        do {
            let start = ContinuousClock.now
            result = try await Self.onBundleQueue { try replica.importBundle(file, limits: bundleLimits) }
            metrics.recordMerge(result.report, replica: replica, duration: ContinuousClock.now - start)
        } catch let error as BundleError {
            throw APIError(.unprocessableContent, "bad-bundle", "\(error)")
        }
        let report = result.report, header = result.header
        audit.operatorAction("bundle-import", object: result.exporter.rawValue, result: "imported", user: await context.author(), detail:
            "\(result.commits) commits: \(report.applied) new, \(report.duplicates) known, \(report.held.count) held, "
            + "\(report.rejected.count) refused; header \(result.headerVerified ? "verified" : "not verified")")
        judged(report, from: "bundle:\(result.exporter.rawValue)")
        return JSONResponse.make(.object([
            "from": .string(result.exporter.rawValue), "org": header["org"] ?? .null, "name": header["name"] ?? .null,
            "created": header["created"] ?? .null, "commits": .int(Int64(result.commits)),
            "new": .int(Int64(report.applied)), "alreadyKnown": .int(Int64(report.duplicates)),
            "restored": .int(Int64(report.restored)),
            "headerVerified": .bool(result.headerVerified), "headerNote": result.headerNote.map { .string($0) } ?? .null,
            "held": .array(report.held.map { .object(["commit": .string("\($0.ref)"), "reason": .string($0.reason.rawValue), "detail": .string($0.detail)]) }),
            "rejected": .array(report.rejected.map { .object(["commit": .string("\($0.ref)"), "reason": .string($0.reason.rawValue), "detail": .string($0.detail)]) }),
            "digest": .string(Hex.encode(replica.digestRoot)),
        ]))
    }

    // MARK: Reconciliation

    func reconcile(_ request: Request) async throws -> Response {
        let peer = try request.formParameters["peer"].map { try partner($0) }
        if let peer, peer.address == nil {
            throw APIError.badRequest("partner \(peer.name ?? peer.id.rawValue) has no address in the registry; it reconciles with us from its side")
        }
        let report = await reconciler.run(trigger: "manual", peer: peer?.id)
        return JSONResponse.make(report)
    }

    func reportList() throws -> Response {
        let items: [JSONValue] = reports.list().reversed().compactMap { id in
            guard let r = try? reports.load(id) else { return nil }
            return .object(["id": .string(id), "started": r["started"] ?? .null, "trigger": r["trigger"] ?? .null,
                            "verdict": r["verdict"] ?? .null, "peers": .int(Int64(r["peers"]?.arrayValue?.count ?? 0))])
        }
        return JSONResponse.make(.object(["reports": .array(items)]))
    }

    func report(_ id: String) throws -> Response {
        guard let r = try reports.load(id) else {
            throw APIError.notFound(id == "latest" ? "no reconciliation has run yet; run progsync reconcile" : "no report \(id)")
        }
        return JSONResponse.make(r)
    }
}
