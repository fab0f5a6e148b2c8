/// Why a commit was refused or held. Deterministic: every node decides the same for the same
/// commit, registry and causal past.
public struct CommitVerdict: Sendable, Hashable, CustomStringConvertible {
    public struct Reason: Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // Held: not applied, not dropped; retried when the cause goes away.
        public static let unknownNode = Reason("unknown-node")
        public static let gap = Reason("gap")
        public static let missingDependency = Reason("missing-dependency")
        public static let clockAhead = Reason("clock-ahead")
        // Rejected: never applied; kept in the rejected log.
        public static let badSignature = Reason("bad-signature")
        public static let brokenChain = Reason("broken-chain")
        public static let conflictingSequence = Reason("conflicting-sequence")
        public static let invalid = Reason("invalid")
        public static let unauthorised = Reason("unauthorised")
        /// Withheld: beyond its node's retirement. Stored, never merged; judged again whenever
        /// the membership changes, so every node ends with the same set merged.
        public static let retired = Reason("retired")

        public var isHold: Bool { [.unknownNode, .gap, .missingDependency, .clockAhead].contains(self) }
    }

    public var reason: Reason
    public var detail: String
    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }
    public var description: String { "\(reason): \(detail)" }
}

public enum CommitRules {
    public static let maxChangesPerCommit = 10_000
    public static let maxAuthorBytes = 256

    /// Every seq a commit names (its own, `supersedes`, `ownerRefs`) lies in 1..<2^63: stored as
    /// SQLite integers and used in arithmetic, so a larger one is refused where it enters.
    public static let seqRange: Range<UInt64> = 1..<(1 << 63)

    /// The envelope: what must hold before a commit may be held, restored, counted or stored.
    /// Checked on the bytes alone (no key needed), so junk never reaches the held or log tables.
    public static func validateEnvelope(_ commit: Commit) -> CommitVerdict? {
        guard seqRange.contains(commit.seq) else { return CommitVerdict(.invalid, "seq \(commit.seq) is outside 1..<2^63") }
        if commit.changes.isEmpty { return CommitVerdict(.invalid, "a commit must change at least one field") }
        if commit.changes.count > maxChangesPerCommit {
            return CommitVerdict(.invalid, "more than \(maxChangesPerCommit) changes in one commit")
        }
        if commit.author.utf8.count > maxAuthorBytes { return CommitVerdict(.invalid, "author longer than \(maxAuthorBytes) bytes") }
        if (commit.seq == 1) != commit.prev.isEmpty || (!commit.prev.isEmpty && commit.prev.count != 32) {
            return CommitVerdict(.invalid, "prev hash does not fit seq \(commit.seq)")
        }
        for (record, ref) in commit.ownerRefs where !seqRange.contains(ref.seq) {
            return CommitVerdict(.invalid, "owner reference for \(record.prefix(140)) has seq \(ref.seq) outside 1..<2^63")
        }
        for change in commit.changes {
            for ref in change.supersedes where !seqRange.contains(ref.seq) {
                return CommitVerdict(.invalid, "supersedes \(ref.origin)/\(ref.seq), outside 1..<2^63")
            }
        }
        return nil
    }

    /// Envelope, shape and schema: every change is a valid field of a valid record id, once per
    /// commit. `schema` is the judge's schema version. A commit written under a newer one is
    /// judged on envelope and shape only: what it says may be valid in a version this node does
    /// not know yet, so it is kept, never refused for that (`schemaGaps` lists what waits).
    public static func validate(_ commit: Commit, schema: UInt32 = ProgrammeSchema.current) -> CommitVerdict? {
        if let verdict = validateEnvelope(commit) { return verdict }
        struct FieldKey: Hashable {
            let record: String
            let field: String
        }
        let judgeValues = commit.schema <= schema
        // Small commits (the usual case) compare pairwise; large ones use a set.
        var seen = Set<FieldKey>(minimumCapacity: commit.changes.count > 32 ? commit.changes.count : 0)
        var checkedRecord: String?
        for (index, change) in commit.changes.enumerated() {
            // A commit's changes mostly come grouped by record: check each id once in a row.
            if change.record != checkedRecord {
                guard ProgrammeSchema.isValidRecordID(change.record) else {
                    return CommitVerdict(.invalid, "invalid record id")
                }
                checkedRecord = change.record
            }
            if judgeValues {
                do {
                    try validate(change, schema: commit.schema)
                } catch {
                    return CommitVerdict(.invalid, "record \(change.record): \(error)")
                }
            }
            let duplicate = commit.changes.count > 32
                ? !seen.insert(FieldKey(record: change.record, field: change.field)).inserted
                : commit.changes[..<index].contains { $0.field == change.field && $0.record == change.record }
            if duplicate {
                return CommitVerdict(.invalid, "record \(change.record) field \(change.field) changed twice in one commit")
            }
            for ref in change.supersedes where ref.origin == commit.origin && ref.seq >= commit.seq {
                return CommitVerdict(.invalid, "supersedes a later commit of its own origin (\(ref))")
            }
        }
        for (record, ref) in commit.ownerRefs where ref.origin == commit.origin && ref.seq >= commit.seq {
            return CommitVerdict(.invalid, "owner reference for \(record) points forward (\(ref))")
        }
        return nil
    }

    /// One change's value under a schema: a membership record's (`Membership`) or a programme
    /// record's (`ProgrammeSchema`). Record ids starting `org:` or `node:` are membership's.
    public static func validate(_ change: Change, schema: UInt32) throws(SchemaError) {
        if Membership.isMembershipRecord(change.record) {
            try Membership.validate(record: change.record, field: change.field, value: change.value,
                                    canonicalSize: change.valueBytes.count, schema: schema)
        } else {
            try ProgrammeSchema.validate(field: change.field, value: change.value, canonicalSize: change.valueBytes.count, schema: schema)
        }
    }

    /// What a commit written under a newer schema uses that this node's schema does not allow:
    /// one line per change, for `quarantine` and `status`. Empty when the commit's schema is
    /// not newer, or when everything in it happens to be valid here too.
    public static func schemaGaps(_ commit: Commit, schema: UInt32) -> [String] {
        guard commit.schema > schema else { return [] }
        let known = ProgrammeSchema.fieldNames(in: schema)
        return commit.changes.compactMap { change -> String? in
            guard known.contains(change.field) || (schema >= Membership.schema && Membership.isMembershipRecord(change.record)) else {
                return "record \(change.record): field \(change.field)"
            }
            do {
                try validate(change, schema: schema)
                return nil
            } catch {
                return "record \(change.record): \(change.field) \(change.value.canonicalString.prefix(80))"
            }
        }
    }

    /// One applied change of a record's `owner`: what the ownership rule reads of the past.
    public struct OwnerChange: Sendable, Hashable {
        public var ref: CommitRef
        public var owner: String?
        public var supersedes: [CommitRef]
        public init(ref: CommitRef, owner: String?, supersedes: [CommitRef]) {
            self.ref = ref
            self.owner = owner
            self.supersedes = supersedes
        }
    }

    /// Ownership (§6), decided from the commit and its causal past only, so every node reaches the
    /// same verdict whatever the arrival order. Coordinators may change anything. Any other org
    /// may set `owner` only to create a record: to itself, superseding nothing, with no owner
    /// change of that record in the commit's causal past. To change a record it must name in
    /// `ownerRefs` the latest owner change in its causal past, and that change must make it the
    /// owner: a record the coordinator moved away stays out of reach of its old owner.
    ///
    /// The causal past used here is what the origin's chain has named up to this commit (see
    /// `causalPast(of:originPast:)`): its own earlier commits, and for every commit any of them or
    /// this one references, that commit and its origin's earlier ones. Causal delivery has applied
    /// all of them before the commit is judged.
    /// `ownerHistory(record, named)` gives every applied owner change of the record, in any order.
    /// When `named` (the commit's owner reference) is the record's only current owner version,
    /// that change alone may be given: nothing replaced it, so the verdict is the same.
    public static func authorise(
        _ commit: Commit, org: String, registry: PartnerRegistry, originPast: [NodeID: UInt64],
        ownerHistory: (_ record: String, _ named: CommitRef?) throws -> [OwnerChange]
    ) rethrows -> CommitVerdict? {
        if let verdict = authoriseMembership(commit, org: org, registry: registry) { return verdict }
        if registry.isCoordinator(org: org) { return nil }
        let past = causalPast(of: commit, originPast: originPast)
        let inPast = { (ref: CommitRef) in ref.seq <= (past[ref.origin] ?? 0) }

        // Most commits change one record: no grouping needed.
        if let first = commit.changes.first?.record, commit.changes.allSatisfy({ $0.record == first }) {
            return try authorise(commit, record: first, changes: commit.changes[...], org: org, inPast: inPast, ownerHistory: ownerHistory)
        }
        var records: [String: [Change]] = [:]
        for change in commit.changes { records[change.record, default: []].append(change) }
        for (record, changes) in records.sorted(by: { $0.key < $1.key }) {
            if let verdict = try authorise(commit, record: record, changes: changes[...], org: org, inPast: inPast, ownerHistory: ownerHistory) {
                return verdict
            }
        }
        return nil
    }

    /// Membership (#12): a node's commits beyond its retirement are withheld; only a coordinator
    /// organisation changes the partnership, and the set of coordinator organisations is the
    /// trust root's, so an organisation record cannot claim or drop that role.
    public static func authoriseMembership(_ commit: Commit, org: String, registry: PartnerRegistry) -> CommitVerdict? {
        if let after = registry.node(commit.origin)?.retiredAfter, commit.seq > after {
            return CommitVerdict(.retired, "node \(commit.origin) was retired after its commit \(after)")
        }
        for change in commit.changes where Membership.isMembershipRecord(change.record) {
            guard registry.isCoordinator(org: org) else {
                return CommitVerdict(.unauthorised, "only a coordinator organisation may change the partnership; org \(org) changed \(change.record.prefix(140))")
            }
            if change.field == "coordinator", Membership.kind(ofRecord: change.record) == .organisation {
                // On the canonical bytes: `value.boolValue` here made the optimiser crash
                // ("Found ownership error", Swift 6.3.1, -O).
                let code = String(change.record.dropFirst(Membership.orgPrefix.count))
                let says = String(decoding: change.valueBytes, as: UTF8.self)
                guard says == (registry.isCoordinator(org: code) ? "true" : "false") else {
                    return CommitVerdict(.unauthorised, "the coordinator organisations are fixed by the trust root; \(change.record) says coordinator=\(says.prefix(20))")
                }
            }
        }
        return nil
    }

    /// The causal past the ownership rule reads, as the highest seq per origin: what the origin's
    /// earlier commits named (`originPast`), its own earlier commits, and what this one names.
    public static func causalPast(of commit: Commit, originPast: [NodeID: UInt64]) -> [NodeID: UInt64] {
        var past = originPast
        extendCausalPast(&past, with: commit)
        return past
    }

    /// `causalPast(of:originPast:)` in place: the apply path carries one per origin.
    public static func extendCausalPast(_ past: inout [NodeID: UInt64], with commit: Commit) {
        func note(_ ref: CommitRef) { if ref.seq > past[ref.origin] ?? 0 { past[ref.origin] = ref.seq } }
        note(CommitRef(origin: commit.origin, seq: commit.seq - 1))
        for ref in commit.ownerRefs.values { note(ref) }
        for change in commit.changes { change.supersedes.forEach(note) }
    }

    /// One record's changes in a commit by a non-coordinator org.
    static func authorise(
        _ commit: Commit, record: String, changes: ArraySlice<Change>, org: String,
        inPast: (CommitRef) -> Bool, ownerHistory: (String, CommitRef?) throws -> [OwnerChange]
    ) rethrows -> CommitVerdict? {
        if let ownerChange = changes.first(where: { $0.field == "owner" }) {
            guard ownerChange.value.stringValue == org else {
                return CommitVerdict(.unauthorised, "org \(org) may not give record \(record) to another owner")
            }
            guard ownerChange.supersedes.isEmpty else {
                return CommitVerdict(.unauthorised, "org \(org) may not take over record \(record)")
            }
            if let existing = try ownerHistory(record, nil).filter({ inPast($0.ref) }).map(\.ref).min() {
                return CommitVerdict(.unauthorised, "org \(org) may not take over record \(record): its owner was set by \(existing)")
            }
            return nil  // creating a record it owns
        }
        guard let named = commit.ownerRefs[record] else {
            return CommitVerdict(.unauthorised, "org \(org) changed record \(record) without owning it (a new record needs owner=\(org))")
        }
        let history = try ownerHistory(record, named)
        guard let change = history.first(where: { $0.ref == named }), change.owner == org else {
            let owner = history.first { $0.ref == named }?.owner
            return CommitVerdict(.unauthorised, "org \(org) is not the owner of record \(record) (owner per \(named): \(owner ?? "none"))")
        }
        // Stale when an owner change in the causal past replaced it, directly or through others.
        let byRef = Dictionary(history.map { ($0.ref, $0) }, uniquingKeysWith: { a, _ in a })
        var replaced = Set<CommitRef>()
        var queue = history.filter { inPast($0.ref) }.flatMap(\.supersedes)
        while let ref = queue.popLast() {
            guard replaced.insert(ref).inserted else { continue }
            queue += byRef[ref]?.supersedes ?? []
        }
        if replaced.contains(change.ref) {
            let latest = history.filter { inPast($0.ref) && !replaced.contains($0.ref) }.max { $0.ref < $1.ref }
            return CommitVerdict(.unauthorised,
                "org \(org) is no longer the owner of record \(record): \(latest.map { "\($0.ref) made \($0.owner ?? "nobody") its owner" } ?? "its owner changed") after \(named)")
        }
        return nil
    }
}
