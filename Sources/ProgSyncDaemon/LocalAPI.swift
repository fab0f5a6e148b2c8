import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// The local HTTP/JSON API on the Unix socket (§12). Handlers validate at the boundary, then hand
/// field writes to the replica; a refused request changes nothing.
struct LocalAPI: Sendable, PartnerCommitIntake {
    let replica: Replica
    let node: NodeFiles.StoredIdentity
    let limits: DaemonConfiguration.Limits
    let events: EventBroadcaster
    let committer: GroupCommitter
    /// Invites this node issues; nil where no daemon runs (the OpenAPI test's route listing).
    var joining: Joining? = nil
    let peerSet: PeerSet
    var peers: [PeerReplicator] { peerSet.replicators }
    let reconciler: Reconciler
    let reports: ReconcileReports
    let inbound: InboundContact
    let authors: CommitAuthors
    /// Liveness and readiness; nil where no daemon runs (the OpenAPI test's route listing).
    var health: HealthChecks? = nil
    var metrics = DaemonMetrics()
    let audit: AuditLog
    let asOfCache = AsOfCache()

    func addRoutes(to router: Router<LocalRequestContext>) {
        router.get("/v1/status") { _, _ in try self.status() }
        router.get("/v1/records") { request, _ in try self.listRecords(request) }
        router.get("/v1/records/:id") { request, context in try self.getRecord(try Self.pathID(context), request) }
        router.put("/v1/records/:id") { request, context in try await self.writeRecord(request, context, mustExist: false) }
        router.patch("/v1/records/:id") { request, context in try await self.writeRecord(request, context, mustExist: true) }
        router.delete("/v1/records/:id") { _, context in try await self.deleteRecord(context) }
        router.get("/v1/records/:id/history") { _, context in try self.history(try Self.pathID(context)) }
        router.get("/v1/conflicts") { _, _ in try self.conflicts() }
        router.post("/v1/conflicts/:id/resolve") { request, context in try await self.resolve(request, context) }
        router.get("/v1/quarantine") { _, _ in try self.quarantine() }
        router.post("/v1/quarantine/:hash/release") { _, context in try await self.release(try context.parameters.require("hash"), context) }
        router.get("/v1/digest") { _, _ in try self.digest() }
        router.post("/v1/import") { request, context in try await self.importRecords(request, context) }
        router.get("/v1/events") { request, _ in try self.eventStream(request) }
        router.get("/v1/peers") { _, _ in try self.peersResponse() }
        router.post("/v1/sync") { request, _ in try await self.sync(request) }
        router.get("/v1/bundle") { request, _ in try await self.exportBundle(request) }
        router.post("/v1/bundle") { request, context in try await self.importBundle(request, context) }
        router.post("/v1/reconcile") { request, _ in try await self.reconcile(request) }
        router.get("/v1/reconcile/reports") { _, _ in try self.reportList() }
        router.get("/v1/reconcile/reports/:id") { _, context in try self.report(try context.parameters.require("id")) }
        addHealthRoutes(to: router)
        addAuditRoutes(to: router)
        addPartnerRoutes(to: router)
        router.post("/v1/backup") { request, _ in try await self.backup(request) }
        router.post("/v1/resume-writes") { _, _ in try self.resumeWrites() }
    }

    // MARK: Reading

    func status() throws -> Response {
        let counts = try replica.counts()
        var records: [String: JSONValue] = ["deleted": .int(Int64(counts.deleted))]
        var total = 0
        for kind in RecordKind.allCases {
            let n = counts.byKind[kind.rawValue] ?? 0
            records[kind.rawValue] = .int(Int64(n))
            total += n
        }
        records["total"] = .int(Int64(total))
        let clock = replica.clock
        var body: [String: JSONValue] = [
            "node": .string(node.identity.id.rawValue), "org": .string(node.org),
            "clock": .string(clock.hex), "time": .string(clock.description),
            "records": .object(records), "conflicts": .int(Int64(counts.conflicts)),
            "held": .int(Int64(counts.held)), "rejected": .int(Int64(counts.rejected)),
            "versionVector": .object(Dictionary(uniqueKeysWithValues: replica.versionVector.map { ($0.key.rawValue, JSONValue.int(Int64($0.value))) })),
            "digest": .string(Hex.encode(replica.digestRoot)), "fields": .int(Int64(counts.fields)),
            "peers": try peersJSON(),
            "connectivity": try connectivityJSON(),
        ]
        if let name = node.name { body["name"] = .string(name) }
        body["versions"] = try versionsJSON()
        body["catchingUp"] = catchUpJSON()
        return JSONResponse.make(.object(body))
    }

    /// This node's schema and protocol, what waits for a newer schema, and partners on another
    /// schema: what an operator needs to decide who upgrades.
    func versionsJSON() throws -> JSONValue {
        let schema = replica.configuration.schemaVersion
        let waiting = try replica.newerSchemaSummary()
        var notes: [JSONValue] = []
        if let needs = waiting.needs, waiting.count > 0 {
            notes.append(.string("\(waiting.count) commit\(waiting.count == 1 ? "" : "s") wait for schema \(needs); upgrade progsync on this node"))
        }
        for p in peers.map({ $0.status.withLock { $0 } }).sorted(by: { $0.name < $1.name }) {
            guard let theirs = p.partnerSchema, theirs != schema else { continue }
            notes.append(.string(theirs < schema
                ? "partner \(p.name) is behind: schema \(theirs), this node \(schema)"
                : "partner \(p.name) is ahead: schema \(theirs), this node \(schema)"))
        }
        return .object([
            "schema": .int(Int64(schema)), "newestSchema": .int(Int64(ProgrammeSchema.current)),
            "protocol": .string(PeerProtocol.local.description), "waitingForNewerSchema": .int(Int64(waiting.count)),
            "notes": .array(notes),
        ])
    }

    func listRecords(_ request: Request) throws -> Response {
        let q = request.formParameters
        var query = RecordQuery()
        query.kind = q["kind"]
        if let kind = query.kind, RecordKind(rawValue: kind) == nil {
            throw APIError.badRequest("kind must be one of: \(RecordKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let status = q["status"] {
            guard let parsed = ProgrammeStatus(userInput: status) else {
                throw APIError.badRequest("status must be one of: \(ProgrammeStatus.allowedCodes)")
            }
            query.status = parsed.rawValue
        }
        // Filters that can only ever match a well-formed value are checked like one: `?result=`
        // is a mistake to report, not a filter that quietly matches nothing.
        query.owner = q["owner"]
        if let owner = query.owner, !ProgrammeSchema.isValidOrgCode(owner) {
            throw APIError.badRequest("owner must be an organisation code ([a-z0-9-]{1,64})")
        }
        query.result = q["result"]
        query.actionLine = q["actionLine"]
        for (name, id) in [("result", query.result), ("actionLine", query.actionLine)] {
            if let id, !ProgrammeSchema.isValidRecordID(id) { throw APIError.badRequest("\(name) must be a record id ([A-Za-z0-9._:-]{1,128})") }
        }
        query.text = q["q"]
        if let deleted = q["deleted"] {
            guard let parsed = RecordQuery.Deleted(rawValue: deleted) else { throw APIError.badRequest("deleted must be include or only") }
            query.deleted = parsed
        }
        if let limit = q["limit"] {
            guard let n = Int(limit), n >= 1, n <= limits.maxPageSize else {
                throw APIError.badRequest("limit must be a whole number from 1 to \(limits.maxPageSize)")
            }
            query.limit = n
        }
        if let offset = q["offset"] {
            guard let n = Int(offset), n >= 0 else { throw APIError.badRequest("offset must be a whole number ≥ 0") }
            query.offset = n
        }
        let withBasis: Bool
        switch q["basis"] {
        case nil, "false": withBasis = false
        case "true": withBasis = true
        default: throw APIError.badRequest("basis must be true or false")
        }
        // As of a moment: the same answer over the state the log gives for then.
        let asOf = try Self.asOf(q["asOf"])
        let then = try asOf.map { try asOfCache.records(replica, $0) }
        let (ids, total) = try then?.recordIDs(query) ?? replica.recordIDs(query)
        var out = Array("{".utf8)
        if let asOf { out.append(contentsOf: #""asOf":"\#(asOf.instant)","#.utf8) }
        out.append(contentsOf: #""limit":\#(query.limit),"offset":\#(query.offset),"records":["#.utf8)
        var first = true
        let org = orgOfOrigin()
        for id in ids {
            // A record deleted for good between the two reads is left out, not an error.
            guard let document = try then.map({ RecordDocument(id: id, rows: $0.rows(ofRecord: id)) }) ?? recordDocument(id) else { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            document.write(into: &out, withVersions: false, withBasis: withBasis, org: org)
        }
        out.append(contentsOf: #"],"total":\#(total)}"#.utf8)
        if let then { asOfCache.served(then, lastPage: query.offset >= total - min(total, query.limit)) }
        return JSONResponse.make(bytes: out)
    }

    func getRecord(_ id: String, _ request: Request) throws -> Response {
        if let asOf = try Self.asOf(request.formParameters["asOf"]) { return try recordAsOf(id, asOf) }
        return JSONResponse.make(bytes: answer(try existingRecord(id)))
    }

    /// A record's answer for `RecordReadFastPath`; nil when it does not exist. The same bytes
    /// as `getRecord`'s.
    func recordAnswer(_ id: String) throws -> [UInt8]? {
        try recordDocument(id).map(answer)
    }

    /// A record with its versions, as `GET /v1/records/{id}` answers it.
    func answer(_ document: RecordDocument) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(2048)
        document.write(into: &out, withVersions: true, org: orgOfOrigin())
        return out
    }

    /// The `{id}` path segment, percent-decoded (clients encode ':' and '.' as they like).
    static func pathID(_ context: LocalRequestContext) throws -> String {
        let raw = try context.parameters.require("id")
        guard raw.utf8.contains(UInt8(ascii: "%")) else { return raw }
        guard let decoded = raw.removingPercentEncoding else { throw APIError.badRequest("invalid percent-encoding in the path") }
        return decoded
    }

    func recordDocument(_ id: String) throws -> RecordDocument? {
        RecordDocument(id: id, rows: try replica.storedRows(ofRecord: id))
    }

    func existingRecord(_ id: String) throws -> RecordDocument {
        try Self.checkRecordID(id)
        guard let document = try recordDocument(id) else { throw APIError.notFound("no record \(id)") }
        return document
    }

    static func checkRecordID(_ id: String) throws {
        guard ProgrammeSchema.isValidRecordID(id) else { throw APIError.badRequest("invalid record id: use 1–128 of A-Z a-z 0-9 . _ : -") }
    }

    /// The org of a version's origin node, from the registry as it is now.
    func orgOfOrigin() -> (String) -> String? {
        let registry = replica.registry
        return { NodeID($0).flatMap(registry.org(of:)) }
    }

    func versionJSON(_ version: FieldVersion, value: JSONValue?, author: String?) -> JSONValue {
        var out: [String: JSONValue] = [
            "stamp": .string(version.stamp.hex), "time": .string(Stamp.iso8601(milliseconds: version.stamp.milliseconds)),
            "origin": .string(version.origin.rawValue), "org": .string(replica.registry.org(of: version.origin) ?? "unknown"),
            "author": .string(author ?? "unknown"),
        ]
        if let value { out["value"] = value }
        return .object(out)
    }

    func history(_ id: String) throws -> Response {
        _ = try existingRecord(id)
        let entries: [JSONValue] = try replica.history(ofRecord: id).map { stored in
            let c = stored.commit.commit
            return .object([
                "origin": .string(c.origin.rawValue), "org": .string(replica.registry.org(of: c.origin) ?? "unknown"),
                "seq": .int(Int64(c.seq)), "stamp": .string(c.stamp.hex),
                "time": .string(Stamp.iso8601(milliseconds: c.stamp.milliseconds)),
                "author": .string(try replica.author(of: CommitRef(origin: c.origin, seq: c.seq)) ?? c.author),
                "changes": .array(c.changes.filter { $0.record == id }.map { .object(["field": .string($0.field), "value": $0.value]) }),
            ])
        }
        return JSONResponse.make(.object(["id": .string(id), "history": .array(entries)]))
    }

    func conflicts() throws -> Response {
        let list: [JSONValue] = try replica.conflicts().map { entry in
            let versions = try ([entry.winner] + entry.losers).enumerated().map { index, version -> JSONValue in
                var v = versionJSON(version, value: (try? JSONParser.parse(version.value)) ?? .null, author: try replica.author(of: version.ref))
                if case .object(var o) = v {
                    o["winner"] = .bool(index == 0)
                    v = .object(o)
                }
                return v
            }
            return .object([
                "id": .string("\(entry.record)~\(entry.field)"), "record": .string(entry.record),
                "field": .string(entry.field), "versions": .array(versions),
            ])
        }
        return JSONResponse.make(.object(["conflicts": .array(list)]))
    }

    func quarantine() throws -> Response {
        let held: [JSONValue] = try replica.heldCommits().map { h in
            .object([
                "hash": .string(Hex.encode(h.hash)), "origin": .string(h.ref.origin.rawValue), "seq": .int(Int64(h.ref.seq)),
                "stamp": .string(h.stamp.hex), "time": .string(h.stamp.description), "reason": .string(h.reason.rawValue),
                "detail": .string(h.detail), "receivedAt": .string(Stamp.iso8601(milliseconds: h.receivedAt)),
            ])
        }
        let newer: [JSONValue] = try replica.newerSchemaCommits().map { n in
            .object([
                "origin": .string(n.ref.origin.rawValue), "seq": .int(Int64(n.ref.seq)), "reason": .string("newer-schema"),
                "needsSchema": .int(Int64(n.schema)), "gaps": .array(n.gaps.map { .string($0) }),
            ])
        }
        let registry = replica.registry
        let withheld: [JSONValue] = try replica.withheldCommits().map { signed in
            let c = signed.commit
            return .object([
                "origin": .string(c.origin.rawValue), "seq": .int(Int64(c.seq)), "org": .string(registry.org(of: c.origin) ?? "unknown"),
                "reason": "retired", "retiredAfter": registry.node(c.origin)?.retiredAfter.map { .int(Int64($0)) } ?? .null,
                "time": .string(c.stamp.description),
                "changes": .array(c.changes.map { .object(["record": .string($0.record), "field": .string($0.field), "value": $0.value]) }),
            ])
        }
        return JSONResponse.make(.object(["held": .array(held), "newerSchema": .array(newer), "withheld": .array(withheld)]))
    }

    func release(_ hashText: String, _ context: LocalRequestContext) async throws -> Response {
        guard let hash = Hex.decode(hashText), hash.count == 32 else { throw APIError.badRequest("hash must be 64 hex digits") }
        let report = try await merge(from: "quarantine") { try $0.releaseHeld(hash: hash) }
        audit.operatorAction("quarantine-release", object: hashText.lowercased(), result: "released", user: await context.author(),
                             detail: "applied \(report.applied), held \(report.held.count), refused \(report.rejected.count)")
        return JSONResponse.make(.object([
            "applied": .int(Int64(report.applied)), "held": .int(Int64(report.held.count)), "rejected": .int(Int64(report.rejected.count)),
        ]))
    }

    func digest() throws -> Response {
        let buckets = replica.digestBuckets
        let inner = ReplicaDigest.innerNodes(buckets)
        return JSONResponse.make(.object([
            "root": .string(Hex.encode(ReplicaDigest.root(inner: inner))),
            "inner": .array(inner.map { .string(Hex.encode($0)) }),
            "fields": .int(Int64(try replica.counts().fields)),
        ]))
    }

    // MARK: Writing

    /// Reads a JSON body within the route's byte and depth limits.
    func jsonBody(_ request: Request, limit: Int) async throws -> JSONValue {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw APIError(.contentTooLarge, "too-large", "request body larger than \(limit) bytes")
        }
        do {
            return try JSONParser.parse(Array(buffer.readableBytesView), maxDepth: limits.maxJSONDepth)
        } catch {
            throw APIError.badRequest("malformed JSON: \(error)")
        }
    }

    /// Checks a flat object of field values, naming the field and its allowed values on refusal.
    func fieldWrites(record: String, _ body: JSONValue) throws -> [FieldWrite] {
        guard case .object(let object) = body else { throw APIError.badRequest("body must be a JSON object of fields") }
        var writes: [FieldWrite] = []
        for name in object.keys.sorted() where name != "id" {
            var value = object[name]!
            if name == "status", let text = value.stringValue, let status = ProgrammeStatus(userInput: text) {
                value = .string(status.rawValue)
            }
            // For the answer only (the field named before "a new record needs a kind"); the
            // commit itself is judged once, by `CommitRules`, under the same schema.
            do { try ProgrammeSchema.validate(field: name, value: value, schema: replica.configuration.schemaVersion) } catch {
                throw APIError.invalid(error.description)
            }
            writes.append(FieldWrite(record: record, field: name, value: value))
        }
        guard !writes.isEmpty else { throw APIError.badRequest("no fields to change") }
        return writes
    }

    /// A new record needs a kind, that kind's fields, and an owner (this node's org by default).
    func completeCreation(record: String, _ writes: [FieldWrite]) throws -> [FieldWrite] {
        let given = Dictionary(writes.map { ($0.field, $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let kindText = given["kind"]?.stringValue, let kind = RecordKind(rawValue: kindText) else {
            throw APIError.invalid("kind: a new record needs a kind, one of: \(RecordKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let missing = kind.requiredFields.filter { given[$0] == nil || given[$0] == .null }
        guard missing.isEmpty else { throw APIError.invalid("\(missing.joined(separator: ", ")): required for a new \(kind.rawValue)") }
        var writes = writes
        if given["owner"] == nil { writes.append(FieldWrite(record: record, field: "owner", value: .string(node.org))) }
        return writes
    }

    func writeRecord(_ request: Request, _ context: LocalRequestContext, mustExist: Bool) async throws -> Response {
        let id = try Self.pathID(context)
        try Self.checkRecordID(id)
        var writes = try fieldWrites(record: id, try await jsonBody(request, limit: limits.maxBodyBytes))
        let exists = try recordDocument(id) != nil
        if !exists {
            if mustExist { throw APIError.notFound("no record \(id); use PUT to create it") }
            writes = try completeCreation(record: id, writes)
        }
        return try await commit(writes, context: context, record: id, created: !exists)
    }

    func deleteRecord(_ context: LocalRequestContext) async throws -> Response {
        let id = try Self.pathID(context)
        _ = try existingRecord(id)
        return try await commit([FieldWrite(record: id, field: "deleted", value: true)], context: context, record: id, created: false)
    }

    func resolve(_ request: Request, _ context: LocalRequestContext) async throws -> Response {
        let conflictID = try Self.pathID(context)
        // Split at the first "~" as a byte: as a Character, "~" followed by a combining mark
        // would not be found.
        guard let tilde = conflictID.utf8.firstIndex(of: UInt8(ascii: "~")),
              tilde > conflictID.startIndex, conflictID.utf8.index(after: tilde) < conflictID.endIndex else {
            throw APIError.badRequest("conflict id is <record>~<field>")
        }
        let parts = [String(conflictID[..<tilde]), String(conflictID[conflictID.utf8.index(after: tilde)...])]
        let body = try await jsonBody(request, limit: limits.maxBodyBytes)
        guard let entry = try replica.conflicts(record: parts[0]).first(where: { $0.field == parts[1] }) else {
            throw APIError.notFound("no open conflict \(conflictID)")
        }
        let value: JSONValue
        if let pick = body["pick"]?.intValue {
            let versions = [entry.winner] + entry.losers
            guard pick >= 0, pick < versions.count else { throw APIError.badRequest("pick must be from 0 to \(versions.count - 1)") }
            value = (try? JSONParser.parse(versions[Int(pick)].value)) ?? .null
        } else if let given = body["value"] {
            value = given
        } else {
            throw APIError.badRequest("give {\"pick\": n} or {\"value\": v}")
        }
        let writes = try fieldWrites(record: entry.record, .object([entry.field: value]))
        let commit = try await committer.commit(LocalWrite(author: try await commitAuthor(context), writes: writes, resolving: true))
        audit.operatorAction("conflict-resolve", object: conflictID, result: "resolved", user: await context.author(),
                             detail: "\(body["pick"] != nil ? "picked version \(body["pick"]?.intValue ?? 0)" : "gave a new value") of \(entry.losers.count + 1); commit \(commit.commit.ref)")
        return try commitResponse(commit, record: entry.record, created: false)
    }

    /// The author for the commits a request makes: its Unix user, or that user's pseudonym.
    func commitAuthor(_ context: LocalRequestContext) async throws -> String {
        let user = await context.author()
        if let known = authors.knownAuthor(forUser: user) { return known }
        // A user's first write stores the name behind the pseudonym: on the writer's thread.
        return try await replica.writing { [authors] _ in try authors.commitAuthor(forUser: user) }
    }

    func commit(_ writes: [FieldWrite], context: LocalRequestContext, record: String, created: Bool) async throws -> Response {
        let commit = try await committer.commit(LocalWrite(author: try await commitAuthor(context), writes: writes))
        return try commitResponse(commit, record: record, created: created)
    }

    func commitResponse(_ commit: SignedCommit, record: String, created: Bool) throws -> Response {
        let c = commit.commit
        var out = Array(#"{"commit":{"origin":"#.utf8)
        JSONValue.writeString(c.origin.rawValue, into: &out)
        out.append(contentsOf: #","seq":\#(c.seq),"stamp":"\#(c.stamp.hex)"},"created":\#(created),"record":"#.utf8)
        if let document = try recordDocument(record) {
            document.write(into: &out, withVersions: false, org: orgOfOrigin())
        } else {
            out.append(contentsOf: "null".utf8)
        }
        out.append(UInt8(ascii: "}"))
        return JSONResponse.make(status: created ? .created : .ok, bytes: out)
    }

    /// All-or-nothing import: validated and compared with the replica first (see `ImportPlan`),
    /// then applied as commits of at most `ImportPlan.changesPerCommit` changes, all in one
    /// transaction.
    func importRecords(_ request: Request, _ context: LocalRequestContext) async throws -> Response {
        let answer = try await applyImport(request, context)
        // Only now are the parsed body and the built commits freed, so there is memory to hand back.
        try? await replica.writing { $0.releaseMemory() }
        return JSONResponse.make(answer)
    }

    func applyImport(_ request: Request, _ context: LocalRequestContext) async throws -> JSONValue {
        let body = try await jsonBody(request, limit: limits.maxImportBytes)
        let list = body["records"]?.arrayValue ?? body.arrayValue
        guard let list else { throw APIError.badRequest("body must be {\"records\": [...]} or an array of records") }
        let rows = try ImportPlan.rows(list), org = node.org
        let plan = try await replica.reading { try ImportPlan(rows: rows, defaultOwner: org, replica: $0) }
        let author = try await commitAuthor(context)
        let start = ContinuousClock.now
        let commits = try await replica.writing { try $0.commitLocalBatch(author: author, commits: plan.batches).count }
        metrics.recordLocalWrite(ContinuousClock.now - start)
        return plan.answer(commits: commits)
    }

    /// Loads the bundled 2021 programme into an empty replica.
    static func loadSample(into replica: Replica, org: String) throws -> Int {
        guard let url = Bundle.module.url(forResource: "programme-2021", withExtension: "json"),
            let data = FileManager.default.contents(atPath: url.path)
        else { throw ConfigurationError("the bundled sample programme is missing") }
        let json = try JSONParser.parse([UInt8](data))
        let list = json["records"]?.arrayValue ?? []
        let plan = try ImportPlan(rows: try ImportPlan.rows(list), defaultOwner: org, replica: replica)
        try replica.commitLocalBatch(author: "progsyncd", commits: plan.batches)
        return list.count
    }

    // MARK: Peers

    func peersJSON() throws -> JSONValue {
        let now = Replica.wallClockMilliseconds()
        let last = try replica.lastLSN
        return .array(peers.map { $0.status.withLock { $0 }.json(now: now, localLastLSN: last) })
    }

    func peersResponse() throws -> Response {
        JSONResponse.make(.object(["peers": try peersJSON()]))
    }

    /// Waits until the chosen peers are caught up both ways (or the timeout passes).
    func sync(_ request: Request) async throws -> Response {
        let q = request.formParameters
        let name = q["peer"]
        let selected = peers.filter { p in name == nil || p.status.withLock { $0.name == name || $0.node.rawValue == name } }
        if let name, selected.isEmpty { throw APIError.notFound("no peer \(name)") }
        guard let timeout = Double(q["timeout"] ?? "60"), timeout >= 0, timeout <= 600 else {
            throw APIError.badRequest("timeout must be a number of seconds from 0 to 600")
        }
        let target = try replica.lastLSN
        let deadline = Replica.wallClockMilliseconds() + UInt64(max(0, min(timeout, 600)) * 1000)
        var caughtUp = false
        while Replica.wallClockMilliseconds() < deadline {
            caughtUp = selected.allSatisfy { p in
                p.status.withLock { s in s.state == .up && s.caughtUpSince != nil && s.pushed >= target }
            }
            if caughtUp { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let now = Replica.wallClockMilliseconds()
        let last = try replica.lastLSN
        return JSONResponse.make(.object([
            "caughtUp": .bool(caughtUp),
            "peers": .array(selected.map { $0.status.withLock { $0 }.json(now: now, localLastLSN: last) }),
            "digest": .string(Hex.encode(replica.digestRoot)),
        ]))
    }

    // MARK: Events

    static let lastEventID = HTTPField.Name("Last-Event-ID")!

    /// Events after `Last-Event-ID` (an LSN), when given, come from the commit log first, page by
    /// page, then the live stream takes over; so a client that was cut off for falling behind, or
    /// that reconnects, misses nothing.
    func eventStream(_ request: Request) throws -> Response {
        let resumeAfter = try request.headers[Self.lastEventID].map { text in
            guard let lsn = Int64(text), lsn >= 0 else { throw APIError.badRequest("Last-Event-ID must be an event id (an LSN ≥ 0)") }
            return lsn
        }
        guard let subscription = events.subscribe(maxSubscribers: limits.maxEventSubscribers, backlog: limits.maxEventBacklog) else {
            throw APIError(.serviceUnavailable, "busy", "at most \(limits.maxEventSubscribers) event streams at a time; try again later")
        }
        let replica = replica, events = events
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: .init { writer in
                try await writer.write(ByteBuffer(string: ": progsync events\n\n"))
                var last = resumeAfter ?? subscription.startLSN
                while last < subscription.startLSN {
                    let page = try replica.commits(afterLSN: last, limit: 500).filter { $0.lsn <= subscription.startLSN }
                    guard let end = page.last?.lsn else { break }
                    for stored in page {
                        try await writer.write(ByteBuffer(string: EventBroadcaster.event(stored, replica: replica)))
                    }
                    last = end
                }
                for await event in subscription.stream where event.lsn > last {
                    try await writer.write(ByteBuffer(string: event.text))
                    last = event.lsn
                }
                if !events.isShuttingDown {
                    try await writer.write(ByteBuffer(string: ": this stream fell too far behind; reconnect with Last-Event-ID: \(last)\n\n"))
                }
                try await writer.finish(nil)
            })
    }
}

extension Request {
    /// The query's parameters as forms and most HTTP libraries encode them: `+` is a space and a
    /// literal plus is `%2B` (Hummingbird's `queryParameters` keeps `+` as is, so a status label
    /// sent as `In+uitvoering...` would not be recognised). The first of repeated names counts.
    var formParameters: [String: String] {
        func decode(_ text: Substring) -> String {
            let spaced = text.replacingOccurrences(of: "+", with: " ")
            return spaced.removingPercentEncoding ?? spaced
        }
        var parameters: [String: String] = [:]
        for pair in (uri.query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = decode(parts[0])
            if parameters[name] == nil { parameters[name] = parts.count > 1 ? decode(parts[1]) : "" }
        }
        return parameters
    }
}
