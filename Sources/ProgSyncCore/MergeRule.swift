/// One version of a field: a value written by one commit.
public struct FieldVersion: Sendable, Hashable {
    public var value: [UInt8]  // canonical JSON
    public var stamp: Stamp
    public var origin: NodeID
    public var seq: UInt64

    public init(value: [UInt8], stamp: Stamp, origin: NodeID, seq: UInt64) {
        self.value = value
        self.stamp = stamp
        self.origin = origin
        self.seq = seq
    }

    public var ref: CommitRef { CommitRef(origin: origin, seq: seq) }

    /// The merge order: greatest `(stamp, origin)` wins (§7).
    public static func wins(_ a: FieldVersion, over b: FieldVersion) -> Bool {
        (a.stamp, a.origin) > (b.stamp, b.origin)
    }
}

/// The versions of one field that nobody has superseded: the winner and the conflict losers.
public struct FieldFrontier: Sendable, Hashable {
    public var winner: FieldVersion
    /// Sorted best first, so equal sets compare equal.
    public var losers: [FieldVersion]

    public init(winner: FieldVersion, losers: [FieldVersion] = []) {
        self.winner = winner
        self.losers = losers
    }

    public var isConflicted: Bool { !losers.isEmpty }
    public var versions: [FieldVersion] { [winner] + losers }
}

/// The merge rule, pure. A field's state is its frontier: every version that no other version
/// superseded. The winner is the frontier's greatest `(stamp, origin)`; the rest are conflict
/// losers, kept until someone writes a value that supersedes them. Because a commit is applied
/// only after everything it supersedes (causal delivery), the frontier depends only on the set of
/// versions, never on arrival order: commutative, associative and idempotent.
public enum MergeRule {
    /// The frontier of a set of versions: those no `superseded` ref names, each once, best first.
    /// nil when every version was superseded. Rebuilding from the log calls this with all of a
    /// field's versions; merging one more version calls it through `merge`.
    public static func frontier(of versions: [FieldVersion], superseded: Set<CommitRef>) -> FieldFrontier? {
        if versions.count == 1, superseded.isEmpty { return FieldFrontier(winner: versions[0]) }
        var seen = Set<CommitRef>()
        let alive = versions.filter { !superseded.contains($0.ref) && seen.insert($0.ref).inserted }
            .sorted { FieldVersion.wins($0, over: $1) }
        return alive.first.map { FieldFrontier(winner: $0, losers: Array(alive.dropFirst())) }
    }

    /// One version more. Causal delivery applies a version only after every version it
    /// supersedes, so merging one at a time gives the frontier of the whole set.
    public static func merge(_ frontier: FieldFrontier?, with version: FieldVersion, supersedes: [CommitRef]) -> FieldFrontier {
        guard let frontier else { return FieldFrontier(winner: version) }
        if frontier.versions.contains(where: { $0.ref == version.ref }) { return frontier }  // already applied
        return Self.frontier(of: frontier.versions + [version], superseded: Set(supersedes))!
    }
}
