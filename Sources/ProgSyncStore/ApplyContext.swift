import Foundation
import GRDB
import Logging
import ProgSyncCore

/// One write transaction's work: authenticate, check, merge and record commits. It starts from a
/// copy of the replica's cached state and hands the updated copy back only if the transaction
/// commits.
struct ApplyContext {
    let db: Database
    let replica: Replica
    var state: Replica.State
    var report = ApplyReport()
    /// Digest leaves to write back: a bit per bucket, as every merged change marks one.
    var dirtyBuckets = [UInt64](repeating: 0, count: ReplicaDigest.bucketCount / 64)
    var dirtyHeads = Set<NodeID>()
    var clockMoved = false
    /// The registry in force changed in this transaction (a membership record was merged).
    var membershipChanged = false
    var releasedFromClockGuard = Set<[UInt8]>()
    /// Origins whose held or refused rows grew in this transaction: checked against the limits.
    var heldOrigins = Set<String>()
    var rejectedOrigins = Set<String>()
    /// The apply path's statements, looked up once per transaction: GRDB's statement cache
    /// hashes the SQL text on every lookup, and these run for every commit.
    private var hotStatements = [Statement?](repeating: nil, count: HotStatement.count)
    private var digestScratch: [UInt8] = []
    var registry: PartnerRegistry { state.registry }
    var now: UInt64 { replica.configuration.now() }

    init(db: Database, replica: Replica, state: Replica.State) {
        self.db = db
        self.replica = replica
        self.state = state
    }

    // MARK: Local commits

    mutating func commitLocal(author: String, writes: [FieldWrite], resolving: Bool) throws -> SignedCommit {
        let me = replica.nodeID
        let org = replica.configuration.org
        var changes: [Change] = []
        var seen = Set<String>()
        for w in writes {
            guard seen.insert(w.record + "\u{0}" + w.field).inserted else {
                throw ReplicaError(.invalid, "record \(w.record) field \(w.field) given twice")
            }
            let frontier = try loadFrontier(record: w.record, field: w.field)
            let supersedes = try w.basis.map { try checkedBasis($0, of: w, frontier: frontier) }
                ?? Self.supersedes(frontier, resolving: resolving, me: me)
            changes.append(Change(record: w.record, field: w.field, value: w.value, supersedes: supersedes))
        }
        // A partner names the owner change it relies on; `judge` below decides whether it may.
        var ownerRefs: [String: CommitRef] = [:]
        if !registry.isCoordinator(org: org) {
            for record in Set(writes.map(\.record)) where !changes.contains(where: { $0.record == record && $0.field == "owner" }) {
                ownerRefs[record] = try loadFrontier(record: record, field: "owner")?.winner.ref
            }
        }
        let head = state.heads[me]
        let stamp = state.clock.tick(nowMilliseconds: now)
        clockMoved = true
        let commit = Commit(
            origin: me, seq: (head?.seq ?? 0) + 1, stamp: stamp, schema: replica.configuration.schemaVersion, author: author,
            prev: head?.hash ?? [], ownerRefs: ownerRefs, changes: changes)
        // The same rules partners apply: a local write they would refuse is refused here, not stored.
        if let verdict = try judge(commit, org: org) {
            throw ReplicaError(verdict.reason == .unauthorised ? .forbidden : .invalid, verdict.detail)
        }
        let signed = try SignedCommit.sign(commit, with: replica.identity)
        try accept(signed, org: org, judged: true)
        return signed
    }

    /// What a local write replaces. Resolving replaces every competing version. A plain write
    /// replaces the current value when there is no conflict; in a conflict it replaces only this
    /// node's own earlier versions, so another party's competing value stays listed until someone
    /// resolves the conflict on purpose.
    static func supersedes(_ frontier: FieldFrontier?, resolving: Bool, me: NodeID) -> [CommitRef] {
        guard let frontier else { return [] }
        if resolving { return frontier.versions.map(\.ref) }
        if !frontier.isConflicted { return [frontier.winner.ref] }
        return frontier.versions.filter { $0.origin == me }.map(\.ref)
    }

    /// A write's explicit basis, which must be a version of that field this replica holds: in
    /// the frontier or in the commit log. Superseding anything else would be a claim about
    /// versions nobody here has seen.
    func checkedBasis(_ basis: CommitRef, of w: FieldWrite, frontier: FieldFrontier?) throws -> [CommitRef] {
        if frontier?.versions.contains(where: { $0.ref == basis }) == true { return [basis] }
        guard try Replica.loggedValue(db, of: basis, record: w.record, field: w.field) != nil else {
            throw ReplicaError(.invalid, "record \(w.record) field \(w.field): basis \(basis) is not a version of that field this node holds")
        }
        return [basis]
    }

    // MARK: Remote commits

    /// Groups by origin, walks each origin's chain in seq order, and verifies the last signature
    /// of each contiguous run (the hash links authenticate the rest, §6).
    mutating func ingest(_ commits: [SignedCommit], fromHeld: Bool) throws {
        var byOrigin: [NodeID: [SignedCommit]] = [:]
        for c in commits {
            // The envelope first: a seq outside 1..<2^63 must not reach a hold, a restore or a count.
            if let verdict = CommitRules.validateEnvelope(c.commit) {
                try reject(c, verdict, fromHeld: fromHeld)
                continue
            }
            byOrigin[c.commit.origin, default: []].append(c)
        }
        for origin in byOrigin.keys.sorted() {
            var group = byOrigin[origin]!
            group.sort { $0.commit.seq < $1.commit.seq }
            try ingest(origin: origin, group, fromHeld: fromHeld)
        }
    }

    mutating func ingest(origin: NodeID, _ group: [SignedCommit], fromHeld: Bool) throws {
        guard let node = registry.node(origin) else {
            for c in group {
                try hold(c, CommitVerdict(.unknownNode, "node \(origin) is not admitted to the partnership (yet)"), fromHeld: fromHeld)
            }
            return
        }
        let group = try withoutImpostors(group, node: node, fromHeld: fromHeld)
        var run: [SignedCommit] = []
        var expectedSeq = (state.heads[origin]?.seq ?? 0) + 1
        var expectedPrev = state.heads[origin]?.hash ?? []
        var index = 0
        while index < group.count {
            let c = group[index]
            index += 1
            let seq = c.commit.seq
            if seq < expectedSeq {
                if run.contains(where: { $0.commit.seq == seq }) {
                    // Two different commits for one seq in the same batch: at most one is genuine.
                    try rejectUnlessGenuine(c, node: node, fromHeld: fromHeld)
                    continue
                }
                try handleKnownSeq(c, node: node, fromHeld: fromHeld)
                continue
            }
            if seq > expectedSeq {
                try flush(&run, node: node, fromHeld: fromHeld)
                try holdAuthentic(group[(index - 1)...], CommitVerdict(.gap, "waiting for \(origin)/\(expectedSeq)"), node: node, fromHeld: fromHeld)
                return
            }
            if c.commit.prev != expectedPrev {
                try flush(&run, node: node, fromHeld: fromHeld)
                if c.hasValidSignature(publicKey: node.publicKey) {
                    try reject(c, CommitVerdict(.brokenChain, "prev does not match \(origin)/\(seq - 1)"), fromHeld: fromHeld)
                } else {
                    try reject(c, CommitVerdict(.badSignature, "signature does not verify with \(origin)'s key"), fromHeld: fromHeld)
                }
                continue
            }
            run.append(c)
            expectedSeq += 1
            expectedPrev = c.hash
        }
        try flush(&run, node: node, fromHeld: fromHeld)
    }

    /// One commit per hash, and where several claim one seq, only those the origin really signed:
    /// a junk commit with the right `prev` must not displace the genuine one, nor get an honest
    /// origin logged as forking. Genuine rivals (a real fork) stay, lowest hash first, so every
    /// node keeps the same one.
    mutating func withoutImpostors(_ group: [SignedCommit], node: PartnerRegistry.Node, fromHeld: Bool) throws -> [SignedCommit] {
        var seen = Set<[UInt8]>()
        let unique = group.filter { seen.insert($0.hash).inserted }
        var out: [SignedCommit] = []
        out.reserveCapacity(unique.count)
        var i = 0
        while i < unique.count {
            var j = i + 1
            while j < unique.count, unique[j].commit.seq == unique[i].commit.seq { j += 1 }
            if j - i == 1 {
                out.append(unique[i])
            } else {
                var genuine: [SignedCommit] = []
                for c in unique[i..<j] {
                    if c.hasValidSignature(publicKey: node.publicKey) {
                        genuine.append(c)
                    } else {
                        try reject(c, CommitVerdict(.badSignature, "signature does not verify with \(c.commit.origin)'s key"), fromHeld: fromHeld)
                    }
                }
                out += genuine.sorted { $0.hash.lexicographicallyPrecedes($1.hash) }
            }
            i = j
        }
        return out
    }

    /// Holds commits that wait for an earlier one, after checking that the origin signed them:
    /// junk is refused, not held. A hash-linked run is authenticated by its newest signature (§6);
    /// commits from the held table were checked when they were held.
    mutating func holdAuthentic(_ commits: ArraySlice<SignedCommit>, _ verdict: CommitVerdict, node: PartnerRegistry.Node, fromHeld: Bool) throws {
        let commits = Array(commits)
        var authentic = [Bool](repeating: fromHeld, count: commits.count)
        if !fromHeld {
            var start = 0
            while start < commits.count {
                var end = start + 1
                while end < commits.count, commits[end].commit.seq == commits[end - 1].commit.seq + 1,
                    commits[end].commit.prev == commits[end - 1].hash
                {
                    end += 1
                }
                if commits[end - 1].hasValidSignature(publicKey: node.publicKey) {
                    for k in start..<end { authentic[k] = true }
                } else {
                    for k in start..<end { authentic[k] = commits[k].hasValidSignature(publicKey: node.publicKey) }
                }
                start = end
            }
        }
        for (k, c) in commits.enumerated() {
            if authentic[k] || c.commit.seq <= (state.heads[c.commit.origin]?.seq ?? 0) {
                try holdOrSkip(c, verdict, fromHeld: fromHeld)
            } else {
                try reject(c, CommitVerdict(.badSignature, "signature does not verify with \(c.commit.origin)'s key"), fromHeld: fromHeld)
            }
        }
    }

    /// A seq at or below the head: the same commit again is a no-op, another one is refused.
    mutating func handleKnownSeq(_ c: SignedCommit, node: PartnerRegistry.Node, fromHeld: Bool) throws {
        let stored = try Data.fetchOne(
            db, sql: "SELECT hash FROM commits WHERE origin = ? AND seq = ?",
            arguments: [c.commit.origin.rawValue, Int64(c.commit.seq)])
        if let stored, [UInt8](stored) == c.hash {
            report.duplicates += 1
            if fromHeld { try unhold(c) }
            return
        }
        if stored == nil, try restore(c, node: node) { return }
        try rejectUnlessGenuine(c, node: node, fromHeld: fromHeld)
    }

    /// A commit the heads cover but the log lacks (deleted behind the daemon's back): it goes
    /// back into the log if it is the origin's genuine commit and links to a stored neighbour.
    /// Its changes are already merged, so nothing else moves; reconciliation rebuilds the records.
    mutating func restore(_ c: SignedCommit, node: PartnerRegistry.Node) throws -> Bool {
        guard c.hasValidSignature(publicKey: node.publicKey) else { return false }
        let origin = c.commit.origin.rawValue
        let seq = c.commit.seq
        let hashAt = try db.cachedStatement(sql: "SELECT hash, body FROM commits WHERE origin = ? AND seq = ?")
        var linked = false
        if seq == 1 {
            linked = c.commit.prev.isEmpty
        } else if let row = try Row.fetchOne(hashAt, arguments: [origin, Int64(seq - 1)]) {
            guard [UInt8](row[0] as Data) == c.commit.prev else { return false }
            linked = true
        }
        if state.heads[c.commit.origin]?.seq == seq {
            guard state.heads[c.commit.origin]?.hash == c.hash else { return false }
            linked = true
        } else if let row = try Row.fetchOne(hashAt, arguments: [origin, Int64(seq + 1)]) {
            guard let next = try? Commit(canonicalBytes: [UInt8](row[1] as Data)), next.prev == c.hash else { return false }
            linked = true
        }
        guard linked else { return false }
        let refused = try Bool.fetchOne(db, sql: "SELECT 1 FROM rejected WHERE hash = ?", arguments: [Data(c.hash)]) ?? false
        try db.execute(
            sql: "INSERT INTO commits (origin, seq, stamp, author, hash, body, sig, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [origin, Int64(seq), Int64(bitPattern: c.commit.stamp.rawValue), c.commit.author, Data(c.hash),
                        Data(c.canonicalBytes), Data(c.signature), refused ? 1 : 0])
        let lsn = db.lastInsertedRowID
        report.stored(lsn: lsn)
        state.lastLSN = max(state.lastLSN, lsn)
        report.restored += 1
        if !refused {
            for record in Set(c.commit.changes.map(\.record)) {
                try db.execute(sql: "INSERT OR IGNORE INTO record_commits (record, lsn) VALUES (?, ?)", arguments: [record, lsn])
                report.restoredRecords.insert(record)
            }
        }
        return true
    }

    mutating func rejectUnlessGenuine(_ c: SignedCommit, node: PartnerRegistry.Node, fromHeld: Bool) throws {
        if c.hasValidSignature(publicKey: node.publicKey) {
            try reject(c, CommitVerdict(.conflictingSequence, "\(c.ref) already holds another commit (replay or fork)"), fromHeld: fromHeld)
        } else {
            try reject(c, CommitVerdict(.badSignature, "signature does not verify with \(c.commit.origin)'s key"), fromHeld: fromHeld)
        }
    }

    /// Authenticates a contiguous run: one signature check when the newest verifies; otherwise
    /// one by one, so the genuine prefix still applies.
    mutating func flush(_ run: inout [SignedCommit], node: PartnerRegistry.Node, fromHeld: Bool) throws {
        guard let last = run.last else { return }
        defer { run.removeAll() }
        let key = node.publicKey
        var authentic = run.count
        if !last.hasValidSignature(publicKey: key) {
            authentic = run.firstIndex { !$0.hasValidSignature(publicKey: key) } ?? run.count
        }
        for i in 0..<run.count {
            let c = run[i]
            if i == authentic {
                try reject(c, CommitVerdict(.badSignature, "signature does not verify with \(c.commit.origin)'s key"), fromHeld: fromHeld)
                continue
            }
            if i > authentic {
                try holdAuthentic(run[i...], CommitVerdict(.gap, "waiting for \(c.commit.origin)/\(run[authentic].commit.seq)"), node: node, fromHeld: fromHeld)
                return
            }
            if let verdict = holdVerdict(c) {
                for rest in run[i...] {
                    let v = rest.hash == c.hash ? verdict : CommitVerdict(.gap, "waiting for \(c.ref)")
                    try holdOrSkip(rest, v, fromHeld: fromHeld)
                }
                return
            }
            try accept(c, org: node.org, fromHeld: fromHeld)
        }
    }

    /// Reasons to wait rather than apply: a clock too far ahead, or a missing causal dependency.
    func holdVerdict(_ c: SignedCommit) -> CommitVerdict? {
        if !releasedFromClockGuard.contains(c.hash),
            HybridLogicalClock.isTooFarAhead(
                c.commit.stamp, nowMilliseconds: now, maxOffsetMilliseconds: replica.configuration.maxClockOffsetMilliseconds)
        {
            let aheadSeconds = (c.commit.stamp.milliseconds - now) / 1000
            return CommitVerdict(.clockAhead, "stamp \(c.commit.stamp) is \(aheadSeconds) s ahead of local time")
        }
        for dep in c.commit.dependencies.sorted() where (state.heads[dep.origin]?.seq ?? 0) < dep.seq {
            return CommitVerdict(.missingDependency, "needs \(dep) first")
        }
        return nil
    }

    // MARK: Accepting

    /// Stores an authentic commit and merges it if valid and authorised; otherwise stores it as
    /// refused (the chain stays whole, so later commits of the origin still apply and relay).
    /// `judged`: a local commit, already validated and authorised while it was made.
    mutating func accept(_ c: SignedCommit, org: String, fromHeld: Bool = false, judged: Bool = false) throws {
        let commit = c.commit
        let verdict = judged ? nil : try judge(commit, org: org)
        let insert = try hot(.insertCommit)
        insert.bind(1, commit.origin.rawValue)
        insert.bind(2, Int64(commit.seq))
        insert.bind(3, Int64(bitPattern: commit.stamp.rawValue))
        insert.bind(4, commit.author)
        insert.bind(5, blob: c.hash)
        insert.bind(6, blob: c.canonicalBytes)
        insert.bind(7, blob: c.signature)
        // 1: refused for good; 2: withheld beyond its node's retirement, judged again when that moves.
        insert.bind(8, verdict.map { $0.reason == .retired ? 2 : 1 } ?? 0)
        try insert.run()
        let lsn = db.lastInsertedRowID
        report.stored(lsn: lsn)
        state.lastLSN = max(state.lastLSN, lsn)
        state.heads[commit.origin] = Replica.Head(seq: commit.seq, hash: c.hash)
        state.pasts[commit.origin, default: CausalPast()].extend(with: commit)
        dirtyHeads.insert(commit.origin)
        if fromHeld { try unhold(c) }
        if commit.origin != replica.nodeID {
            // A commit an operator released from the clock guard may be far ahead; the local
            // clock follows it only up to the guard, so one bad laptop clock cannot drag ours.
            let ceiling = Stamp(milliseconds: now &+ replica.configuration.maxClockOffsetMilliseconds, counter: 0)
            state.clock.receive(min(commit.stamp, ceiling), nowMilliseconds: now)
            clockMoved = true
        }
        if let verdict {
            try logRejection(c, verdict)
            return
        }
        report.applied += 1
        let touch = try hot(.touchRecord)
        let changes = commit.changes
        var start = 0
        while start < changes.count {
            let record = changes[start].record
            var end = start + 1
            while end < changes.count, changes[end].record == record { end += 1 }
            touch.bind(1, record)
            touch.bind(2, lsn)
            try touch.run()
            let versions = changes[start..<end].map {
                FieldVersion(value: $0.valueBytes, stamp: commit.stamp, origin: commit.origin, seq: commit.seq)
            }
            try insertOrMerge(record: record, changes: changes[start..<end], versions: versions)
            start = end
        }
        report.changesMerged += changes.count
        if commit.schema > replica.configuration.schemaVersion { try keepForNewerSchema(commit, lsn: lsn) }
        if changes.contains(where: { Membership.isMembershipRecord($0.record) }) { try refreshMembership() }
    }

    /// A commit written under a schema this node does not know is merged like any other (the
    /// merge rule and the digest never read values, so replicas holding it stay equal). If it
    /// uses what this node's schema lacks, it is listed until this node knows that schema and has
    /// judged it (`newer-schema`). One that uses only what this schema allows is judged already:
    /// a newer schema only adds fields, kinds and values, never refuses what an older allowed.
    mutating func keepForNewerSchema(_ commit: Commit, lsn: Int64) throws {
        let gaps = CommitRules.schemaGaps(commit, schema: replica.configuration.schemaVersion)
        guard !gaps.isEmpty else { return }
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO newer_schema (lsn, origin, seq, schema, gaps) VALUES (?, ?, ?, ?, ?)")
            .execute(arguments: [lsn, commit.origin.rawValue, Int64(commit.seq), Int64(commit.schema), gaps.joined(separator: "; ")])
        report.newerSchema += 1
    }

    enum HotStatement {
        case insertCommit, touchRecord
        /// n rows into `fields`, skipping rows that exist (1...16).
        case insertFields(Int)

        static let count = 2 + 16
        var index: Int {
            switch self {
            case .insertCommit: 0
            case .touchRecord: 1
            case .insertFields(let n): 1 + n
            }
        }
        var sql: String {
            switch self {
            case .insertCommit:
                "INSERT INTO commits (origin, seq, stamp, author, hash, body, sig, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            case .touchRecord:
                "INSERT OR IGNORE INTO record_commits (record, lsn) VALUES (?, ?)"
            case .insertFields(let n):
                "INSERT INTO fields (record, field, value, stamp, origin, seq) VALUES "
                    + Array(repeating: "(?, ?, ?, ?, ?, ?)", count: n).joined(separator: ", ") + " ON CONFLICT DO NOTHING"
            }
        }
    }

    mutating func hot(_ statement: HotStatement) throws -> Statement {
        if let known = hotStatements[statement.index] { return known }
        let prepared = try db.cachedStatement(sql: statement.sql)
        hotStatements[statement.index] = prepared
        return prepared
    }

    /// One record's changes from one commit. Most are fields this replica has never seen, so
    /// they go in with one multi-row insert that skips existing rows; only when a row already
    /// existed do the record's fields go through the merge rule one by one.
    mutating func insertOrMerge(record: String, changes: ArraySlice<Change>, versions: [FieldVersion]) throws {
        let bucket = ReplicaDigest.bucket(ofRecord: record)
        for chunk in stride(from: 0, to: versions.count, by: 16) {
            let n = min(16, versions.count - chunk)
            let statement = try hot(.insertFields(n))
            var column: Int32 = 1
            for k in chunk..<(chunk + n) {
                let version = versions[k]
                statement.bind(column, record)
                statement.bind(column + 1, changes[changes.startIndex + k].field)
                statement.bind(column + 2, text: version.value)
                statement.bind(column + 3, Int64(bitPattern: version.stamp.rawValue))
                statement.bind(column + 4, version.origin.rawValue)
                statement.bind(column + 5, Int64(version.seq))
                column += 6
            }
            try statement.run()
            if db.changesCount == n {
                for k in chunk..<(chunk + n) {
                    addToBucket(bucket, entryHash(record: record, field: changes[changes.startIndex + k].field, version: versions[k]))
                }
                continue
            }
            // Some fields existed. A row holding exactly this version was inserted just now: the
            // commits table's unique (origin, seq) means no earlier row can hold it. Any other
            // goes through the merge rule with the frontier just read.
            for k in chunk..<(chunk + n) {
                let change = changes[changes.startIndex + k]
                let version = versions[k]
                guard let frontier = try loadFrontier(record: record, field: change.field) else {
                    throw ReplicaError(.corrupt, "field row vanished during merge")
                }
                if frontier.losers.isEmpty, frontier.winner == version {
                    addToBucket(bucket, entryHash(record: record, field: change.field, version: version))
                } else {
                    try merge(record: record, field: change.field, version: version, supersedes: change.supersedes, into: frontier)
                }
            }
        }
    }

    /// Shape, schema and ownership (`CommitRules`), the ownership rule reading this replica's past.
    func judge(_ commit: Commit, org: String) throws -> CommitVerdict? {
        if let verdict = CommitRules.validate(commit, schema: replica.configuration.schemaVersion) { return verdict }
        return try CommitRules.authorise(commit, org: org, registry: registry, originPast: state.pasts[commit.origin]?.seqs ?? [:]) {
            record, named in try ownerHistory(record: record, named: named)
        }
    }

    /// The applied owner changes of a record, for the ownership rule. The common case reads one
    /// row: the named change is the only current owner version, so nothing replaced it.
    func ownerHistory(record: String, named: CommitRef?) throws -> [CommitRules.OwnerChange] {
        guard let frontier = try loadFrontier(record: record, field: "owner") else { return [] }
        if let named, frontier.losers.isEmpty, frontier.winner.ref == named {
            let owner = try? JSONParser.parse(frontier.winner.value).stringValue
            return [CommitRules.OwnerChange(ref: named, owner: owner, supersedes: [])]
        }
        let rows = try Row.fetchAll(db, sql: """
            SELECT c.body FROM record_commits rc JOIN commits c ON c.lsn = rc.lsn WHERE rc.record = ? AND c.status = 0
            """, arguments: [record])
        var history: [CommitRules.OwnerChange] = []
        for row in rows {
            guard let stored = try? Commit.Layout([UInt8](row[0] as Data)),
                let change = stored.changes.first(where: { $0.record == record && $0.field == "owner" })
            else { continue }
            let owner = try? JSONParser.parse(change.valueBytes).stringValue
            history.append(CommitRules.OwnerChange(ref: stored.ref, owner: owner, supersedes: change.supersedes))
        }
        return history
    }

    // MARK: Merging

    /// Merges a version into a field that already has a frontier (`old`, as stored).
    mutating func merge(record: String, field: String, version: FieldVersion, supersedes: [CommitRef], into old: FieldFrontier) throws {
        let bucket = ReplicaDigest.bucket(ofRecord: record)
        let new = MergeRule.merge(old, with: version, supersedes: supersedes)
        guard new != old else { return }
        if new.winner != old.winner {
            let update = try db.cachedStatement(
                sql: "UPDATE fields SET value = ?, stamp = ?, origin = ?, seq = ? WHERE record = ? AND field = ?")
            update.setUncheckedArguments([
                String(decoding: new.winner.value, as: UTF8.self), Int64(bitPattern: new.winner.stamp.rawValue),
                new.winner.origin.rawValue, Int64(new.winner.seq), record, field,
            ])
            try update.execute()
            addToBucket(bucket, entryHash(record: record, field: field, version: new.winner)
                - entryHash(record: record, field: field, version: old.winner))
        }
        let oldLosers = Set(old.losers)
        let newLosers = Set(new.losers)
        for gone in oldLosers.subtracting(newLosers) {
            addToBucket(bucket, -loserHash(record: record, field: field, version: gone))
            try db.cachedStatement(sql: "DELETE FROM conflicts WHERE record = ? AND field = ? AND origin = ? AND seq = ?")
                .execute(arguments: [record, field, gone.origin.rawValue, Int64(gone.seq)])
        }
        for added in newLosers.subtracting(oldLosers) {
            addToBucket(bucket, loserHash(record: record, field: field, version: added))
            try db.cachedStatement(sql: "INSERT INTO conflicts (record, field, origin, seq, stamp, value) VALUES (?, ?, ?, ?, ?, ?)")
                .execute(arguments: [
                    record, field, added.origin.rawValue, Int64(added.seq), Int64(bitPattern: added.stamp.rawValue),
                    String(decoding: added.value, as: UTF8.self),
                ])
        }
    }

    func loadFrontier(record: String, field: String) throws -> FieldFrontier? {
        guard let row = try Row.fetchOne(
            try db.cachedStatement(sql: "SELECT value, stamp, origin, seq FROM fields WHERE record = ? AND field = ?"),
            arguments: [record, field])
        else { return nil }
        let winner = try Replica.version(value: row[0], stamp: row[1], origin: row[2], seq: row[3])
        var losers: [FieldVersion] = []
        let rows = try Row.fetchAll(
            try db.cachedStatement(sql: "SELECT value, stamp, origin, seq FROM conflicts WHERE record = ? AND field = ?"),
            arguments: [record, field])
        for r in rows { losers.append(try Replica.version(value: r[0], stamp: r[1], origin: r[2], seq: r[3])) }
        losers.sort { FieldVersion.wins($0, over: $1) }
        return FieldFrontier(winner: winner, losers: losers)
    }

    mutating func entryHash(record: String, field: String, version: FieldVersion) -> BucketSum {
        ReplicaDigest.hash(record: record, field: field, version: version, loser: false, scratch: &digestScratch)
    }

    mutating func loserHash(record: String, field: String, version: FieldVersion) -> BucketSum {
        ReplicaDigest.hash(record: record, field: field, version: version, loser: true, scratch: &digestScratch)
    }

    mutating func addToBucket(_ bucket: Int, _ delta: BucketSum) {
        state.buckets[bucket] = state.buckets[bucket] + delta
        markDirty(bucket)
    }

    mutating func markDirty(_ bucket: Int) {
        dirtyBuckets[bucket >> 6] |= 1 << UInt64(bucket & 63)
    }

    // MARK: Held and refused

    mutating func hold(_ c: SignedCommit, _ verdict: CommitVerdict, fromHeld: Bool) throws {
        try db.cachedStatement(sql: """
            INSERT INTO held (hash, origin, seq, stamp, reason, detail, received_at, body, sig)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (hash) DO UPDATE SET reason = excluded.reason, detail = excluded.detail
            """).execute(arguments: [
                Data(c.hash), c.commit.origin.rawValue, Int64(c.commit.seq), Int64(bitPattern: c.commit.stamp.rawValue),
                verdict.reason.rawValue, verdict.detail, Int64(now), Data(c.canonicalBytes), Data(c.signature),
            ])
        heldOrigins.insert(c.commit.origin.rawValue)
        if !fromHeld {
            report.held.append(HeldCommit(ref: c.ref, hash: c.hash, stamp: c.commit.stamp, reason: verdict.reason, detail: verdict.detail, receivedAt: now))
        }
    }

    /// Holds a commit unless this replica already has it (a duplicate behind a gap is a no-op).
    mutating func holdOrSkip(_ c: SignedCommit, _ verdict: CommitVerdict, fromHeld: Bool) throws {
        if c.commit.seq <= (state.heads[c.commit.origin]?.seq ?? 0) {
            guard let node = registry.node(c.commit.origin) else { return }
            try handleKnownSeq(c, node: node, fromHeld: fromHeld)
            return
        }
        try hold(c, verdict, fromHeld: fromHeld)
    }

    mutating func unhold(_ c: SignedCommit) throws {
        try db.cachedStatement(sql: "DELETE FROM held WHERE hash = ?").execute(arguments: [Data(c.hash)])
    }

    mutating func reject(_ c: SignedCommit, _ verdict: CommitVerdict, fromHeld: Bool) throws {
        if fromHeld { try unhold(c) }
        try logRejection(c, verdict)
    }

    mutating func logRejection(_ c: SignedCommit, _ verdict: CommitVerdict) throws {
        try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO rejected (origin, seq, hash, reason, detail, at, body, sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                // Clamped: a commit refused for its seq is still logged (the detail names the seq).
                c.commit.origin.rawValue, Int64(clamping: c.commit.seq), Data(c.hash), verdict.reason.rawValue, verdict.detail,
                Int64(now), Data(c.canonicalBytes), Data(c.signature),
            ])
        report.rejected.append(RejectedCommit(ref: c.ref, hash: c.hash, reason: verdict.reason, detail: verdict.detail, at: now))
        rejectedOrigins.insert(c.commit.origin.rawValue)
    }

    /// Keeps the held and refused tables within `ReplicaConfiguration.limits`, dropping the oldest.
    mutating func trimHeldAndRejected() throws {
        let limits = replica.configuration.limits
        let logger = replica.configuration.logger
        for origin in heldOrigins.sorted() {
            let known = NodeID(origin).flatMap { registry.node($0) } != nil
            // Unknown origins share one allowance: anyone can make a new key.
            let (scope, arguments, cap): (String, StatementArguments, Int) = known
                ? ("origin = ?", [origin], limits.heldPerOrigin)
                : ("reason = 'unknown-node'", [], limits.heldUnknownOrigins)
            let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM held WHERE \(scope)", arguments: arguments) ?? 0
            guard count > cap else { continue }
            try db.execute(
                sql: "DELETE FROM held WHERE hash IN (SELECT hash FROM held WHERE \(scope) ORDER BY received_at, seq DESC LIMIT ?)",
                arguments: arguments + [count - cap])
            logger.warning("held commits over the limit: dropped the oldest", metadata: [
                "origin": "\(known ? origin : "unknown origins")", "dropped": "\(count - cap)", "limit": "\(cap)"])
        }
        for origin in rejectedOrigins.sorted() {
            let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM rejected WHERE origin = ?", arguments: [origin]) ?? 0
            guard count > limits.rejectedPerOrigin else { continue }
            try db.execute(
                sql: "DELETE FROM rejected WHERE id IN (SELECT id FROM rejected WHERE origin = ? ORDER BY id LIMIT ?)",
                arguments: [origin, count - limits.rejectedPerOrigin])
            logger.warning("refused commits over the limit: dropped the oldest", metadata: [
                "origin": "\(origin)", "dropped": "\(count - limits.rejectedPerOrigin)", "limit": "\(limits.rejectedPerOrigin)"])
        }
    }

    /// Feeds held commits back through `ingest` until no origin's head moves.
    mutating func retryHeld() throws {
        while true {
            let before = state.heads.mapValues(\.seq)
            let origins = try String.fetchAll(db, sql: "SELECT DISTINCT origin FROM held")
            guard !origins.isEmpty else { return }
            var candidates: [SignedCommit] = []
            for origin in origins {
                let headSeq = NodeID(origin).flatMap { state.heads[$0]?.seq } ?? 0
                let rows = try Row.fetchAll(
                    db, sql: "SELECT body, sig FROM held WHERE origin = ? AND seq <= ? ORDER BY seq LIMIT 10000",
                    arguments: [origin, Int64(headSeq) + 10000])
                for row in rows {
                    do {
                        candidates.append(try SignedCommit(canonicalBytes: [UInt8](row[0] as Data), signature: [UInt8](row[1] as Data)))
                    } catch {
                        continue
                    }
                }
            }
            try ingest(candidates, fromHeld: true)
            if state.heads.mapValues(\.seq) == before { return }
        }
    }

    // MARK: Bookkeeping

    mutating func flush() throws {
        try trimHeldAndRejected()
        if dirtyBuckets.contains(where: { $0 != 0 }) {
            let statement = try db.cachedStatement(sql: "INSERT OR REPLACE INTO digest_buckets (bucket, sum) VALUES (?, ?)")
            for (word, bits) in dirtyBuckets.enumerated() where bits != 0 {
                for bit in 0..<64 where bits & (1 << UInt64(bit)) != 0 {
                    let b = word << 6 | bit
                    statement.setUncheckedArguments([b, Data(state.buckets[b].bytes)])
                    try statement.execute()
                }
            }
        }
        if !dirtyHeads.isEmpty {
            let statement = try db.cachedStatement(sql: "INSERT OR REPLACE INTO heads (origin, seq, hash) VALUES (?, ?, ?)")
            for origin in dirtyHeads {
                let head = state.heads[origin]!
                statement.setUncheckedArguments([origin.rawValue, Int64(head.seq), Data(head.hash)])
                try statement.execute()
            }
        }
        if !dirtyHeads.isEmpty {
            let statement = try db.cachedStatement(sql: "INSERT OR REPLACE INTO causal_pasts (origin, past) VALUES (?, ?)")
            for origin in dirtyHeads {
                statement.setUncheckedArguments([origin.rawValue, state.pasts[origin]?.text ?? ""])
                try statement.execute()
            }
        }
        if clockMoved {
            try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('clock', ?)",
                           arguments: [Int64(bitPattern: state.clock.last.rawValue)])
        }
    }
}
