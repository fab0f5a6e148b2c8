import Foundation
import Logging
import ProgSyncCore
import ProgSyncHTTPClient
import ProgSyncStore
import ServiceLifecycle

/// A partner this node can call: its registry entry, address and TLS settings.
struct PeerEndpoint: Sendable {
    var node: PartnerRegistry.Node
    var address: String
    var tls: HTTPClientConfiguration.TLS?
    var name: String { node.name ?? node.id.rawValue }

    func connect() throws -> PeerConnection {
        try PeerConnection(baseURL: address, client: HTTPClient(configuration: HTTPClientConfiguration(
            connectTimeout: .seconds(5), requestTimeout: .seconds(120), maxResponseBytes: 512 << 20, tls: tls)))
    }
}

/// One libcurl connection to a partner's peer API; JSON in, JSON out, errors with the peer's message.
struct PeerConnection: Sendable {
    let baseURL: String
    let client: HTTPClient

    init(baseURL: String, client: HTTPClient) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.client = client
    }

    func call(_ method: String, _ path: String, body: [UInt8]? = nil, timeout: Duration = .seconds(120), closing: Bool = false) async throws -> JSONValue {
        var request = HTTPClientRequest(method: method, url: baseURL + path, body: body, timeout: timeout)
        if body != nil { request.addHeader("Content-Type", "application/json") }
        if closing { request.addHeader("Connection", "close") }
        request.addHeader(PeerProtocol.versionHeaderName, "\(PeerProtocol.local.version)")
        request.addHeader(PeerProtocol.minimumHeaderName, "\(PeerProtocol.local.minimum)")
        let response = try await client.send(request)
        let json = try? JSONParser.parse(response.body, maxDepth: 16)
        guard response.status == 200, let json else {
            let message = json?["message"]?.stringValue ?? "HTTP \(response.status)"
            throw PeerError("\(method) \(path.split(separator: "?").first ?? ""): \(message)")
        }
        return json
    }

    /// Commits of one origin in a seq range, fetched in pages. Each page must hold only that
    /// origin's commits, in rising seq order inside the asked range, so every page moves `from`
    /// forward; anything else ends the fetch with an error rather than a loop.
    func commits(origin: NodeID, seqs: ClosedRange<UInt64>) async throws -> [SignedCommit] {
        guard CommitRules.seqRange.contains(seqs.lowerBound), CommitRules.seqRange.contains(seqs.upperBound) else {
            throw PeerError("seqs \(seqs.lowerBound)…\(seqs.upperBound) of \(origin) are outside 1…2^63-1")
        }
        var out: [SignedCommit] = []
        var from = seqs.lowerBound
        while from <= seqs.upperBound {
            let to = min(seqs.upperBound, from + UInt64(PeerAPI.maxRange) - 1)
            let answer = try await call("GET", "/v1/peer/commits/range?origin=\(origin.rawValue)&from=\(from)&to=\(to)")
            let page = try CommitWire.decode(answer["commits"] ?? .null, maxCommits: PeerAPI.maxRange)
            guard let last = page.last else { break }  // the peer lacks them too
            var expected = from
            for c in page {
                guard c.commit.origin == origin, c.commit.seq >= expected, c.commit.seq <= to else {
                    throw PeerError("asked for \(origin) seqs \(from)…\(to), the peer answered \(c.commit.ref) out of order or outside the range")
                }
                expected = c.commit.seq + 1  // ≤ to + 1 ≤ 2^63
            }
            out += page
            from = last.commit.seq + 1
        }
        return out
    }

    func shutdown() { client.shutdown() }
}

/// The nightly reconciliation (§9): a self-check of the replica against its own commit log,
/// then, per partner, exchange of version vectors, fetching and sending the missing commits,
/// and a digest comparison narrowed down bucket by bucket when the trees differ although the
/// vectors agree. Every run writes a report. Runs never overlap: a request during a run joins it.
actor Reconciler: PartnerCommitIntake {
    let replica: Replica
    /// The partners to reconcile with, as the partnership stands at each run.
    let peers: @Sendable () -> [PeerEndpoint]
    let reports: ReconcileReports
    let audit: AuditLog
    let logger: Logger
    let metrics: DaemonMetrics
    private var running: Task<JSONValue, Never>?

    init(replica: Replica, peers: @escaping @Sendable () -> [PeerEndpoint], reports: ReconcileReports, audit: AuditLog, logger: Logger,
         metrics: DaemonMetrics = DaemonMetrics()) {
        self.replica = replica
        self.metrics = metrics
        self.peers = peers
        self.reports = reports
        self.audit = audit
        var logger = logger
        logger[metadataKey: "job"] = "reconcile"
        self.logger = logger
    }

    var isRunning: Bool { running != nil }

    func run(trigger: String, peer: NodeID? = nil) async -> JSONValue {
        if let running { return await running.value }
        let task = Task { await self.perform(trigger: trigger, only: peer) }
        running = task
        let report = await task.value
        running = nil
        return report
    }

    private func perform(trigger: String, only: NodeID?) async -> JSONValue {
        let started = Replica.wallClockMilliseconds()
        let clock = ContinuousClock()
        let t0 = clock.now
        logger.info("reconciliation started", metadata: ["trigger": "\(trigger)"])
        var reasons: [String] = []
        let partners = peers()
        let chosen = partners.filter { only == nil || $0.node.id == only }
        var connections: [NodeID: PeerConnection] = [:]
        defer { for c in connections.values { c.shutdown() } }
        for p in chosen { connections[p.node.id] = try? p.connect() }

        // 1. Self-check: the log holds every commit the heads claim, the winners match the digest.
        var selfCheck: [String: JSONValue] = [:]
        do {
            let checkStart = ContinuousClock.now
            var integrity = try await replica.reading { try $0.checkIntegrity() }
            selfCheck["checkMs"] = .int((ContinuousClock.now - checkStart).milliseconds)
            selfCheck["fieldsChecked"] = .int(Int64(integrity.fieldsChecked))
            selfCheck["missingCommits"] = .int(Int64(integrity.missingCommitCount))
            selfCheck["divergedBuckets"] = .int(Int64(integrity.divergedBuckets.count))
            var restoredRecords = Set<String>()
            var restored = 0
            if !integrity.missingCommits.isEmpty {
                logger.error("the commit log lacks commits its version vector claims", metadata: ["missing": "\(integrity.missingCommitCount)"])
                for p in chosen {
                    guard let connection = connections[p.node.id] else { continue }
                    for (origin, ranges) in integrity.missingCommits {
                        for range in ranges {
                            guard let commits = try? await connection.commits(origin: origin, seqs: range) else { continue }
                            let r = try await merge(from: "reconcile:\(p.node.id.rawValue)") { try $0.apply(commits) }
                            restored += r.restored
                            restoredRecords.formUnion(r.restoredRecords)
                        }
                    }
                    integrity = try await replica.reading { try $0.checkIntegrity() }
                    if integrity.missingCommits.isEmpty { break }
                }
                selfCheck["commitsRestored"] = .int(Int64(restored))
                if restored > 0 {
                    audit.repaired(object: "commit log", origin: "reconcile:\(trigger)",
                                   detail: "restored \(restored) commits missing from the log from partners")
                }
                if !integrity.missingCommits.isEmpty {
                    reasons.append("\(integrity.missingCommitCount) commits are missing from the log and no partner could supply them")
                }
            }
            if !integrity.divergedBuckets.isEmpty || !restoredRecords.isEmpty {
                if !integrity.divergedBuckets.isEmpty {
                    logger.error("replica differs from its own digest: rebuilding from the commit log",
                                 metadata: ["buckets": "\(integrity.divergedBuckets.count)"])
                }
                // The records that changed in diverged buckets, not the buckets: a repair costs
                // what the divergence costs. Buckets they do not explain are rebuilt whole.
                let suspects = integrity.suspects.union(restoredRecords), divergence = integrity.divergence
                let rebuilt = try await replica.writing { try $0.rebuild(records: suspects, divergence: divergence) }
                selfCheck["recordsRebuilt"] = .int(Int64(rebuilt.records))
                selfCheck["commitsRead"] = .int(Int64(rebuilt.commitsRead))
                selfCheck["rowsWritten"] = .int(Int64(rebuilt.rowsWritten))
                selfCheck["bucketsRebuiltWhole"] = .int(Int64(rebuilt.bucketsRebuiltWhole))
                selfCheck["fieldsRepaired"] = .int(Int64(rebuilt.fieldsRepaired))
                selfCheck["conflictsRepaired"] = .int(Int64(rebuilt.conflictsRepaired))
                selfCheck["repairedExamples"] = .array(rebuilt.examples.map { .string($0) })
                selfCheck["rebuildMs"] = .object(Dictionary(uniqueKeysWithValues: rebuilt.phases.map { ($0.0, JSONValue.int(Int64($0.1))) }))
                if rebuilt.fieldsRepaired + rebuilt.conflictsRepaired > 0 {
                    audit.repaired(object: "replica", origin: "reconcile:\(trigger)", detail:
                        "self-check: \(rebuilt.fieldsRepaired) fields and \(rebuilt.conflictsRepaired) conflicts rebuilt from the commit log "
                        + "(e.g. \(rebuilt.examples.prefix(5).joined(separator: ", ")))")
                    logger.error("repaired fields changed behind the daemon's back", metadata: [
                        "fields": "\(rebuilt.fieldsRepaired)", "conflicts": "\(rebuilt.conflictsRepaired)",
                        "examples": "\(rebuilt.examples.prefix(5).joined(separator: ","))",
                    ])
                }
                // Sums are additive, so the rows written tell whether each bucket now adds up,
                // without a second pass over every field.
                if rebuilt.bucketsStillDiffering > 0 {
                    reasons.append("\(rebuilt.bucketsStillDiffering) digest buckets still differ from the winners after the rebuild")
                }
            }
        } catch {
            reasons.append("self-check failed: \(error)")
            logger.error("self-check failed", metadata: ["error": "\(error)"])
        }

        // 2. Each partner.
        var outcomes: [JSONValue] = []
        for p in chosen {
            guard let connection = connections[p.node.id] else {
                reasons.append("\(p.name): could not set up a connection")
                continue
            }
            let outcome = await reconcile(with: p, connection)
            if outcome["verdict"]?.stringValue != "agree" {
                reasons.append("\(p.name): \(outcome["reason"]?.stringValue ?? "no agreement")")
            }
            outcomes.append(outcome)
        }
        if partners.isEmpty { reasons.append("no partner with an address in the registry: nothing to compare with") }

        let counts = try? replica.attentionCounts()
        let finished = Replica.wallClockMilliseconds()
        let elapsed = clock.now - t0
        let report: JSONValue = .object([
            "node": .string(replica.nodeID.rawValue), "trigger": .string(trigger),
            "started": .string(Stamp.iso8601(milliseconds: started)), "startedMs": .int(Int64(started)),
            "finished": .string(Stamp.iso8601(milliseconds: finished)),
            "durationMs": .int(elapsed.milliseconds),
            "selfCheck": .object(selfCheck), "peers": .array(outcomes),
            "held": .int(Int64(counts?.held ?? 0)), "rejected": .int(Int64(counts?.rejected ?? 0)),
            "openConflicts": .int(Int64(counts?.conflicts ?? 0)),
            "digest": .string(Hex.encode(replica.digestRoot)),
            "verdict": .string(reasons.isEmpty ? "in agreement" : "not in agreement"),
            "reasons": .array(reasons.map { .string($0) }),
        ])
        let saved = (try? reports.save(report)) ?? report
        metrics.recordReconciliation(saved, live: true)
        if reasons.isEmpty {
            logger.info("reconciliation: in agreement", metadata: ["peers": "\(outcomes.count)", "report": "\(saved["id"]?.stringValue ?? "?")"])
        } else {
            logger.warning("reconciliation: NOT in agreement", metadata: ["reasons": "\(reasons.joined(separator: "; "))",
                                                                        "report": "\(saved["id"]?.stringValue ?? "?")"])
        }
        return saved
    }

    private func reconcile(with peer: PeerEndpoint, _ connection: PeerConnection) async -> JSONValue {
        var o: [String: JSONValue] = ["name": .string(peer.name), "node": .string(peer.node.id.rawValue), "org": .string(peer.node.org)]
        var fetched = 0, sent = 0, held = 0, rejected = 0
        do {
            // 1. Version vectors, and the missing commits both ways.
            let hello = try await connection.call("GET", "/v1/peer/hello", timeout: .seconds(15))
            guard hello["node"]?.stringValue == peer.node.id.rawValue else {
                throw PeerError("the peer at \(peer.address) is node \(hello["node"]?.stringValue ?? "?"), not \(peer.node.id)")
            }
            var theirs = CommitWire.versionVector(hello["versionVector"])
            try await replica.writing { [theirs] in try $0.setKnownVector(of: peer.node.id, theirs) }
            let ours = replica.versionVector
            let registry = replica.registry
            var unknownOrigins = 0
            for (origin, seq) in theirs.sorted(by: { $0.key < $1.key }) where seq > (ours[origin] ?? 0) {
                // Commits of an origin the registry does not list could not be verified, and a partner
                // naming millions of made-up origins must not keep this run asking for each.
                guard registry.node(origin) != nil else {
                    unknownOrigins += 1
                    continue
                }
                let commits = try await connection.commits(origin: origin, seqs: ((ours[origin] ?? 0) + 1)...seq)
                let r = try await merge(from: "reconcile:\(peer.node.id.rawValue)") { try $0.apply(commits) }
                fetched += r.applied
                held += r.held.count
                rejected += r.rejected.count
            }
            let missing = try await replica.reading { [theirs] in try $0.rawCommits(missingFrom: theirs) }
            var rest = missing[...]
            while !rest.isEmpty {
                let batch = rest.prefix(PeerReplicator.pushBatch).prefix(bodyBytes: PeerAPI.maxBatchBytes)
                rest = rest[batch.endIndex...]
                let body = JSONValue.object(["commits": .array(batch.map { CommitWire.json(body: $0.body, signature: $0.signature) })]).canonicalBytes
                let answer = try await connection.call("POST", "/v1/peer/commits", body: body)
                sent += answer["applied"]?.intValue.map(Int.init) ?? 0
                theirs = CommitWire.versionVector(answer["versionVector"])
            }
            o["fetched"] = .int(Int64(fetched))
            o["sent"] = .int(Int64(sent))
            o["held"] = .int(Int64(held))
            o["rejected"] = .int(Int64(rejected))
            if unknownOrigins > 0 { o["unknownOrigins"] = .int(Int64(unknownOrigins)) }

            // 2. Digests: one round trip when they agree.
            let digest = fetched + sent > 0 ? try await connection.call("GET", "/v1/peer/hello", timeout: .seconds(15)) : hello
            theirs = CommitWire.versionVector(digest["versionVector"])
            try await replica.writing { [theirs] in try $0.setKnownVector(of: peer.node.id, theirs) }
            let vectorsEqual = theirs.filter { $0.value > 0 } == replica.versionVector.filter { $0.value > 0 }
            o["vectorsEqual"] = .bool(vectorsEqual)
            let digestsEqual = digest["digest"]?.stringValue == Hex.encode(replica.digestRoot)
            o["digestsEqual"] = .bool(digestsEqual)
            if digestsEqual && vectorsEqual {
                o["verdict"] = .string("agree")
                return .object(o)
            }
            if !vectorsEqual {
                let diff = Self.describeDifference(ours: replica.versionVector, theirs: theirs)
                o["verdict"] = .string("disagree")
                o["reason"] = .string("version vectors differ after the exchange (\(diff)); held or refused commits on one side")
                return .object(o)
            }
            // 3. Same commits, different trees: narrow down and repair what is ours to repair.
            logger.error("digests differ although both hold the same commits: narrowing down", metadata: ["peer": "\(peer.name)"])
            let narrowed = try await narrow(connection, channel: "reconcile:\(peer.node.id.rawValue)")
            o["narrowing"] = narrowed.json
            if narrowed.repaired + narrowed.commitsRestored > 0 {
                audit.repaired(object: "replica", origin: "reconcile:\(peer.node.id.rawValue)", detail:
                    "narrowing: \(narrowed.repaired) fields repaired, \(narrowed.commitsRestored) commits restored")
            }
            if narrowed.remaining == 0 {
                o["verdict"] = .string("agree")
                o["reason"] = .string("repaired \(narrowed.repaired) fields of this replica from the commit log")
            } else {
                o["verdict"] = .string("disagree")
                o["reason"] = .string(
                    "\(narrowed.remaining) fields differ although both hold the same commits; this replica matches its commit log, "
                        + "so \(peer.name) must repair its side (its own reconciliation does)")
            }
        } catch {
            o["fetched"] = .int(Int64(fetched))
            o["sent"] = .int(Int64(sent))
            o["verdict"] = .string("unreachable")
            o["reason"] = .string("\(error)")
        }
        return .object(o)
    }

    struct Narrowing {
        var innerDiffering = 0
        var bucketsDiffering = 0
        var entriesDiffering = 0
        var commitsRestored = 0
        var repaired = 0
        var remaining = 0
        var examples: [String] = []
        var json: JSONValue {
            .object([
                "innerDiffering": .int(Int64(innerDiffering)), "bucketsDiffering": .int(Int64(bucketsDiffering)),
                "entriesDiffering": .int(Int64(entriesDiffering)), "commitsRestored": .int(Int64(commitsRestored)),
                "fieldsRepaired": .int(Int64(repaired)), "fieldsStillDiffering": .int(Int64(remaining)),
                "examples": .array(examples.map { .string($0) }),
            ])
        }
    }

    /// root → 64 inner nodes → their buckets → the entries of differing buckets.
    private func narrow(_ connection: PeerConnection, channel: String) async throws -> Narrowing {
        var n = Narrowing()
        let theirInner = try await connection.call("GET", "/v1/peer/digest")["inner"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let ourInner = ReplicaDigest.innerNodes(replica.digestBuckets).map { Hex.encode($0) }
        guard theirInner.count == ourInner.count else { throw PeerError("peer sent \(theirInner.count) inner digest nodes, expected \(ourInner.count)") }
        let inner = (0..<ourInner.count).filter { theirInner[$0] != ourInner[$0] }
        n.innerDiffering = inner.count
        let bucketAnswer = try await connection.call("GET", "/v1/peer/digest/buckets?inner=" + inner.map(String.init).joined(separator: ","))
        let ourBuckets = replica.digestBuckets
        var buckets = Set<Int>()
        for item in bucketAnswer["buckets"]?.arrayValue ?? [] {
            guard let b = item["bucket"]?.intValue.map(Int.init), (0..<ReplicaDigest.bucketCount).contains(b),
                let sum = item["sum"]?.stringValue
            else { continue }
            if sum != Hex.encode(ourBuckets[b].bytes) { buckets.insert(b) }
        }
        n.bucketsDiffering = buckets.count
        var theirEntries: [String: DigestEntry] = [:]
        let sorted = buckets.sorted()
        for start in stride(from: 0, to: sorted.count, by: PeerAPI.maxEntriesBuckets) {
            let page = sorted[start..<min(sorted.count, start + PeerAPI.maxEntriesBuckets)]
            let body = JSONValue.object(["buckets": .array(page.map { .int(Int64($0)) })]).canonicalBytes
            theirEntries.merge(try Self.entries(try await connection.call("POST", "/v1/peer/digest/entries", body: body))) { a, _ in a }
        }
        let differingBuckets = buckets, theirs = theirEntries
        func differing() async throws -> [String] {
            let ours = Dictionary(try await replica.reading { try $0.digestEntries(buckets: differingBuckets) }.map { ($0.key, $0) },
                                  uniquingKeysWith: { a, _ in a })
            return Set(ours.keys).union(theirs.keys).filter { ours[$0]?.hash != theirs[$0]?.hash }.sorted()
        }
        let before = try await differing()
        n.entriesDiffering = before.count
        // Winners we do not hold in our log although our vector covers them: fetch and restore.
        // Only those: an entry beyond our vector is no commit the partner could have sent us (the
        // vectors are equal here), and must not cost a request each.
        var records = Set<String>()
        let vector = replica.versionVector
        for key in before {
            if let e = theirEntries[key] { records.insert(e.record) } else { records.insert(String(key.prefix { $0 != "~" })) }
            guard let e = theirEntries[key], let origin = NodeID(e.origin), e.seq <= vector[origin] ?? 0,
                try await replica.reading({ try $0.rawCommits(origin: origin, seqs: e.seq...e.seq) }).isEmpty
            else { continue }
            let commits = try await connection.commits(origin: origin, seqs: e.seq...e.seq)
            n.commitsRestored += try await merge(from: channel) { try $0.apply(commits) }.restored
        }
        let rebuilt = try await replica.writing { [records] in try $0.rebuild(buckets: [], records: records) }
        n.repaired = rebuilt.fieldsRepaired + rebuilt.conflictsRepaired
        let after = try await differing()
        n.remaining = after.count
        n.examples = Array(after.prefix(10))
        return n
    }

    static func entries(_ answer: JSONValue) throws -> [String: DigestEntry] {
        var out: [String: DigestEntry] = [:]
        for item in answer["entries"]?.arrayValue ?? [] {
            guard let a = item.arrayValue, a.count == 7, let record = a[0].stringValue, let field = a[1].stringValue,
                let stampHex = a[2].stringValue, let stamp = Stamp(hex: stampHex), let origin = a[3].stringValue,
                let seq = a[4].intValue.flatMap(UInt64.init(exactly:)), seq >= 1, let hash = a[5].stringValue.flatMap(Hex.decode),
                let isLoser = a[6].boolValue
            else { throw PeerError("peer sent a malformed digest entry") }
            let e = DigestEntry(record: record, field: field, stamp: stamp, origin: origin, seq: seq, hash: hash, isLoser: isLoser)
            out[e.key] = e
        }
        return out
    }

    static func describeDifference(ours: [NodeID: UInt64], theirs: [NodeID: UInt64]) -> String {
        Set(ours.keys).union(theirs.keys).sorted().compactMap { id -> String? in
            let a = ours[id] ?? 0, b = theirs[id] ?? 0
            return a == b ? nil : "\(id.rawValue.prefix(8)): ours \(a), theirs \(b)"
        }.joined(separator: ", ")
    }
}

/// Reconciliation reports, one JSON file each in `<data>/reports`, pruned after `keepDays`.
struct ReconcileReports: Sendable {
    let directory: String
    let keepDays: Int

    func save(_ report: JSONValue) throws -> JSONValue {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let started = report["startedMs"]?.intValue.flatMap(UInt64.init(exactly:)) ?? 0
        let base = Stamp.iso8601(milliseconds: started).replacingOccurrences(of: ":", with: "").replacingOccurrences(of: "-", with: "")
            .replacingOccurrences(of: ".", with: "")
        var id = "r" + base
        var n = 2
        while fm.fileExists(atPath: path(id)) {
            id = "r\(base)-\(n)"
            n += 1
        }
        guard case .object(var o) = report else { return report }
        o["id"] = .string(id)
        let saved = JSONValue.object(o)
        let temp = path(id) + ".tmp"
        guard fm.createFile(atPath: temp, contents: Data((saved.prettyString() + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw PeerError("cannot write report \(temp)")
        }
        _ = rename(temp, path(id))
        prune(now: started)
        return saved
    }

    func path(_ id: String) -> String { directory + "/" + id + ".json" }

    /// Report ids, oldest first.
    func list() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("r") && $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }

    func load(_ id: String) throws -> JSONValue? {
        let chosen = id == "latest" ? list().last : id
        guard let chosen, chosen.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }),
            let data = FileManager.default.contents(atPath: path(chosen))
        else { return nil }
        return try JSONParser.parse(Array(data), maxDepth: 16)
    }

    var lastStarted: Date? {
        guard let latest = try? load("latest"), let ms = latest["startedMs"]?.intValue else { return nil }
        return Date(timeIntervalSince1970: Double(ms) / 1000)
    }

    func prune(now: UInt64) {
        let (keep, overflow) = UInt64(clamping: keepDays).multipliedReportingOverflow(by: 86_400_000)
        let cutoff = overflow ? 0 : now - min(now, keep)
        for id in list() {
            guard let report = try? load(id), let ms = report["startedMs"]?.intValue, ms < Int64(clamping: cutoff) else { continue }
            try? FileManager.default.removeItem(atPath: path(id))
        }
    }
}

/// Runs the reconciliation at its scheduled time, catches up a run missed while the daemon was
/// down, and retries quarantined commits as local time catches up with them.
struct NightlyJobs: Service, PartnerCommitIntake {
    let reconciler: Reconciler
    let schedule: ReconcileSchedule
    let reports: ReconcileReports
    let replica: Replica
    let audit: AuditLog
    let logger: Logger
    var metrics: DaemonMetrics { reconciler.metrics }

    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.scheduleLoop() }
            group.addTask { await self.quarantineLoop() }
            await group.next()
            group.cancelAll()
        }
    }

    func scheduleLoop() async {
        guard !schedule.isOff else { return await sleepUntilShutdown() }
        if let due = schedule.missedRun(lastRun: reports.lastStarted, now: Date()) {
            logger.notice("catching up a reconciliation missed while the daemon was down", metadata: ["due": "\(due)"])
            // Give the replicators a moment to reach the partners first.
            guard (try? await gracefulSleep(.seconds(3))) != nil else { return }
            _ = await reconciler.run(trigger: "catch-up")
        }
        while true {
            guard let next = schedule.next(after: Date()) else { return }
            let wait = max(0, next.timeIntervalSinceNow)
            logger.debug("next reconciliation", metadata: ["at": "\(next)"])
            guard (try? await gracefulSleep(.milliseconds(Int64(wait * 1000) + 50))) != nil else { return }
            _ = await reconciler.run(trigger: "schedule")
        }
    }

    func quarantineLoop() async {
        while (try? await gracefulSleep(.seconds(10))) != nil {
            guard let held = try? replica.attentionCounts().held, held > 0 else { continue }
            do {
                let report = try await merge(from: "quarantine") { try $0.retryHeld() }
                if report.applied > 0 {
                    logger.info("quarantined commits applied", metadata: ["applied": "\(report.applied)"])
                }
            } catch {
                logger.warning("retrying quarantined commits failed", metadata: ["error": "\(error)"])
            }
        }
    }

    func gracefulSleep(_ duration: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
    }

    func sleepUntilShutdown() async {
        try? await gracefulSleep(.seconds(86_400 * 365))
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
