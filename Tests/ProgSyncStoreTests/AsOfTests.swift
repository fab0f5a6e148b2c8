import Foundation
import GRDB
import ProgSyncCore
import ProgSyncStore
import Testing

/// The programme as of a moment against a replay: random histories from several origins
/// (concurrent edits, conflicts, resolutions, owner moves, deletes and undeletes, a partner's
/// refused commits, a stranger's held commit), then for random cuts T every node's answer as of T
/// must equal a fresh replica that applied only the commits stamped at or before T: the list
/// under several filters, every record's rows, and the single-record read. Replay one case with
/// PROGSYNC_SEED=<seed> PROGSYNC_ASOF_CASES=1.
@Suite struct AsOfTests {
    static let cases = Int(ProcessInfo.processInfo.environment["PROGSYNC_ASOF_CASES"] ?? "") ?? 25
    static let baseSeed = UInt64(ProcessInfo.processInfo.environment["PROGSYNC_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64(UInt32.max))

    static let nodes: [(name: String, org: String)] = [("n0", "jenv"), ("n1", "politie"), ("n2", "comensha"), ("n3", "politie")]
    static let records = ["r0", "r1", "r2", "r3"]
    static let owners = ["r0": "politie", "r1": "politie", "r2": "comensha", "r3": "jenv"]
    static let fields = ["status", "title", "explanation", "deleted"]

    struct Stats {
        var cuts = 0
        var conflicted = 0
        var deleted = 0
        var refusedBefore = 0
        var differsFromNow = 0
    }

    @Test func asOfEqualsAReplayOfTheLogUpToThen() throws {
        var stats = Stats()
        for i in 0..<Self.cases {
            let seed = Self.baseSeed &+ UInt64(i)
            if let why = try Self.runCase(seed: seed, &stats) {
                Issue.record("as-of differs from the replay; replay with PROGSYNC_SEED=\(seed) PROGSYNC_ASOF_CASES=1: \(why)")
                return
            }
        }
        // The cuts must land on the hard cases, or the test proves little.
        #expect(stats.conflicted > stats.cuts / 10, "too few cuts with an open conflict: \(stats)")
        #expect(stats.deleted > stats.cuts / 10, "too few cuts with a deleted record: \(stats)")
        #expect(stats.refusedBefore > stats.cuts / 10, "too few cuts after a refused commit: \(stats)")
        #expect(stats.differsFromNow > stats.cuts / 3, "too few cuts that differ from the current state: \(stats)")
        print("as-of: \(Self.cases) cases from seed \(Self.baseSeed), \(stats)")
    }

    static func value(for field: String, _ rng: inout SeededRandom) -> JSONValue {
        switch field {
        case "status": return .string(ProgrammeStatus.allCases.randomElement(using: &rng)!.rawValue)
        case "deleted": return .bool(Bool.random(using: &rng))
        default: return .string(["a", "b", "Bc", "d", "Één ✓"].randomElement(using: &rng)!)
        }
    }

    /// One random history and its cuts; the reason when an answer differs.
    static func runCase(seed: UInt64, _ stats: inout Stats) throws -> String? {
        var rng = SeededRandom(seed: seed)
        let mallory = NodeIdentity()  // a partner (org inspectie) whose claims on others' records are refused
        let stranger = NodeIdentity()  // in nobody's registry: its commit is held
        var network = TestNetwork(nodes: nodes, coordinators: ["jenv"])
        network.registry.add(PartnerRegistry.Node(org: "inspectie", publicKey: mallory.publicKey, name: "mallory"))
        defer { network.cleanUp() }
        let generators = try nodes.map { try network.replica($0.name, inMemory: true) }

        let setup = try generators[0].commitLocal(author: "setup", writes: records.flatMap { r in
            [FieldWrite(record: r, field: "kind", value: "activity"), FieldWrite(record: r, field: "owner", value: .string(owners[r]!)),
             FieldWrite(record: r, field: "title", value: "t"), FieldWrite(record: r, field: "result", value: "r9")]
        })
        for g in generators.dropFirst() { try g.apply([setup]) }

        var hostile: [SignedCommit] = []
        var created = 0
        for _ in 0..<Int.random(in: 10...30, using: &rng) {
            network.clock.advance(UInt64.random(in: 0...20, using: &rng))
            let i = Int.random(in: 0..<nodes.count, using: &rng)
            let node = generators[i]
            let org = nodes[i].org
            let roll = Double.random(in: 0..<1, using: &rng)
            if roll < 0.25 {
                try node.apply(try allCommits(generators[Int.random(in: 0..<nodes.count, using: &rng)]))
                continue
            }
            if roll < 0.32 {
                // A blind takeover with a stamp that would win: refused on every node.
                let commit = Commit(
                    origin: mallory.id, seq: UInt64(hostile.count + 1), stamp: Stamp(milliseconds: network.clock.now, counter: 9),
                    author: "mallory", prev: hostile.last?.hash ?? [],
                    changes: [Change(record: records.randomElement(using: &rng)!, field: "title", value: "taken")])
                hostile.append(try SignedCommit.sign(commit, with: mallory))
                continue
            }
            if roll < 0.38, org == "jenv" {
                try node.commitLocal(author: "u\(i)", writes: [
                    FieldWrite(record: records.randomElement(using: &rng)!, field: "owner", value: .string(["politie", "comensha", "jenv"].randomElement(using: &rng)!)),
                ])
                continue
            }
            if roll < 0.45 {
                created += 1
                try node.commitLocal(author: "u\(i)", writes: [
                    FieldWrite(record: "x\(i).\(created)", field: "kind", value: "activity"),
                    FieldWrite(record: "x\(i).\(created)", field: "owner", value: .string(org)),
                    FieldWrite(record: "x\(i).\(created)", field: "title", value: value(for: "title", &rng)),
                ])
                continue
            }
            var writes: [FieldWrite] = []
            var used = Set<String>()
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let r = records.randomElement(using: &rng)!
                let f = fields.randomElement(using: &rng)!
                if used.insert(r + f).inserted { writes.append(FieldWrite(record: r, field: f, value: value(for: f, &rng))) }
            }
            do {
                try node.commitLocal(author: "u\(i)", writes: writes, resolving: Double.random(in: 0..<1, using: &rng) < 0.15)
            } catch let error as ReplicaError where error.code == .forbidden {
                continue
            }
        }
        network.clock.advance(1)
        let strange = try SignedCommit.sign(Commit(
            origin: stranger.id, seq: 1, stamp: Stamp(milliseconds: network.clock.now, counter: 0), author: "?", prev: [],
            changes: [Change(record: "s1", field: "kind", value: "activity")]), with: stranger)

        var everything: [SignedCommit] = hostile + [strange]
        for (i, g) in generators.enumerated() {
            everything += try allCommits(g).filter { $0.commit.origin == network.identities[nodes[i].name]!.id }
        }
        // Every node gets everything, in its own order; an observer gets it shuffled, in batches.
        var holders = generators
        for g in generators { try g.apply(everything) }
        let observer = try network.replica("observer", inMemory: true)
        try deliver(everything, to: observer, &rng)
        holders.append(observer)

        let stamps = everything.map(\.commit.stamp).sorted()
        var cuts: [Stamp] = [.zero, stamps.last!, Stamp(rawValue: .max >> 1)]
        for _ in 0..<4 {
            let s = stamps.randomElement(using: &rng)!
            cuts.append([s, Stamp(rawValue: s.rawValue - 1), Stamp(milliseconds: s.milliseconds, counter: .max)].randomElement(using: &rng)!)
        }
        let queries = Self.queries
        for cut in cuts {
            stats.cuts += 1
            let fresh = try network.replica("fresh", inMemory: true)
            let prefix = everything.filter { $0.commit.stamp <= cut }
            try deliver(prefix, to: fresh, &rng)
            let held = try fresh.heldCommits().map(\.ref)
            if held.contains(where: { $0.origin != stranger.id }) { return "the prefix up to \(cut) is not causally closed: holds \(held)" }
            if hostile.contains(where: { $0.commit.stamp <= cut }) { stats.refusedBefore += 1 }
            let ids = Set(try fresh.allWinners().keys).union(["s1", "nothing"])
            var want: [String: [StoredFieldRow]] = [:]
            for id in ids { want[id] = try fresh.storedRows(ofRecord: id) }
            if want.values.contains(where: { $0.contains(where: \.isLoser) }) { stats.conflicted += 1 }
            if try fresh.recordIDs({ var q = RecordQuery(); q.deleted = .only; return q }()).total > 0 { stats.deleted += 1 }
            if try ReplicaSnapshot(fresh).winners != (try holders[0].allWinners()) { stats.differsFromNow += 1 }

            for (k, holder) in holders.enumerated() {
                let then = try holder.recordsAsOf(cut)
                for id in ids {
                    let listed = then.rows(ofRecord: id)
                    if listed != want[id]!.map({ var r = $0; r.author = nil; return r }) {
                        return "holder \(k), cut \(cut), record \(id): \(listed) instead of \(want[id]!)"
                    }
                    let single = try holder.storedRows(ofRecord: id, asOf: cut)
                    if single != want[id]! { return "holder \(k), cut \(cut), record \(id) read alone: \(single) instead of \(want[id]!)" }
                }
                for (n, query) in queries.enumerated() {
                    let got = then.recordIDs(query)
                    let expected = try fresh.recordIDs(query)
                    if got.ids != expected.ids || got.total != expected.total {
                        return "holder \(k), cut \(cut), query \(n): \(got) instead of \(expected)"
                    }
                }
                // At or after the newest stamp, as of then is now.
                if cut >= stamps.last! {
                    for id in ids where then.rows(ofRecord: id) != (try holder.storedRows(ofRecord: id)).map({ var r = $0; r.author = nil; return r }) {
                        return "holder \(k): as of the newest stamp, record \(id) differs from its current state"
                    }
                }
            }
            try fresh.close()
        }
        return nil
    }

    /// A commit deleted from the log and put back from a partner arrives after the commit that
    /// superseded it; as of any moment it is still superseded, as it is in the current state.
    @Test func aCommitPutBackIntoTheLogAfterItsSuccessorStaysSuperseded() throws {
        let network = TestNetwork(nodes: [("n0", "jenv")])
        defer { network.cleanUp() }
        var node = try network.replica("n0")
        let first = try node.commitLocal(author: "a", writes: [
            FieldWrite(record: "a1", field: "kind", value: "activity"), FieldWrite(record: "a1", field: "title", value: "old"),
        ])
        try node.commitLocal(author: "a", writes: [FieldWrite(record: "a1", field: "title", value: "new")])
        try node.close()
        let queue = try DatabaseQueue(path: network.path("n0"))
        try queue.write { db in try db.execute(sql: "DELETE FROM commits WHERE seq = 1") }
        try queue.close()
        node = try network.replica("n0")
        #expect(try node.apply([first]).restored == 1)
        let now = try node.storedRows(ofRecord: "a1")
        #expect(now.allSatisfy { !$0.isLoser })
        let end = Stamp(rawValue: .max >> 1)
        let withoutAuthors = now.map { var r = $0; r.author = nil; return r }
        #expect(try node.recordsAsOf(end).rows(ofRecord: "a1") == withoutAuthors)
        #expect(try node.storedRows(ofRecord: "a1", asOf: end) == now)
        try node.close()
    }

    /// Shuffled, with duplicates, in small batches: arrival order must not matter.
    static func deliver(_ commits: [SignedCommit], to replica: Replica, _ rng: inout SeededRandom) throws {
        var delivery = commits
        for _ in 0..<(commits.count / 5) { delivery.append(commits.randomElement(using: &rng)!) }
        delivery.shuffle(using: &rng)
        var index = 0
        while index < delivery.count {
            let n = Int.random(in: 1...8, using: &rng)
            try replica.apply(Array(delivery[index..<min(index + n, delivery.count)]))
            index += n
        }
    }

    /// Every filter of the list, and paging.
    static let queries: [RecordQuery] = {
        func q(_ change: (inout RecordQuery) -> Void) -> RecordQuery {
            var query = RecordQuery()
            change(&query)
            return query
        }
        return [
            RecordQuery(),
            q { $0.deleted = .include }, q { $0.deleted = .only },
            q { $0.kind = "activity" }, q { $0.kind = "result" },
            q { $0.owner = "politie" }, q { $0.owner = "comensha"; $0.deleted = .include },
            q { $0.status = "completed" }, q { $0.status = "delayed" },
            q { $0.result = "r9" },
            q { $0.text = "b" }, q { $0.text = "ÉÉN" }, q { $0.text = "één" }, q { $0.text = "%" },
            q { $0.limit = 2; $0.offset = 1; $0.deleted = .include },
        ]
    }()
}

/// How dates and instants become cuts.
@Suite struct AsOfParsingTests {
    static func utc(_ text: String) throws -> UInt64 {
        try AsOf(parsing: text).cut.milliseconds
    }

    @Test func aDateIsTheEndOfThatDayInAmsterdam() throws {
        // Winter (CET): the day ends at 23:00 UTC; the cut is the last stamp before it.
        let winter = try AsOf(parsing: "2022-12-31")
        #expect(winter.instant == "2022-12-31T22:59:59.999Z")
        #expect(winter.cut == Stamp(rawValue: Stamp(milliseconds: try Self.utc("2022-12-31T23:00:00Z"), counter: 0).rawValue - 1))
        // Summer (CEST), and both changeover days.
        #expect(try AsOf(parsing: "2023-06-30").instant == "2023-06-30T21:59:59.999Z")
        #expect(try AsOf(parsing: "2023-03-25").instant == "2023-03-25T22:59:59.999Z")
        #expect(try AsOf(parsing: "2023-03-26").instant == "2023-03-26T21:59:59.999Z")
        #expect(try AsOf(parsing: "2023-10-28").instant == "2023-10-28T21:59:59.999Z")
        #expect(try AsOf(parsing: "2023-10-29").instant == "2023-10-29T22:59:59.999Z")
        #expect(try AsOf(parsing: "2024-02-29").instant == "2024-02-29T22:59:59.999Z")
    }

    /// The written-out rule against the host's time zone database, every day for 30 years.
    @Test func theRuleAgreesWithTheTimeZoneDatabase() throws {
        let zone = try #require(TimeZone(identifier: "Europe/Amsterdam"))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        var day = try #require(calendar.date(from: DateComponents(year: 2000, month: 1, day: 1)))
        let end = try #require(calendar.date(from: DateComponents(year: 2030, month: 1, day: 1)))
        var checked = 0
        while day < end {
            let next = try #require(calendar.date(byAdding: .day, value: 1, to: day))
            let parts = calendar.dateComponents([.year, .month, .day], from: day)
            let text = String(format: "%04d-%02d-%02d", parts.year!, parts.month!, parts.day!)
            let expected = UInt64((next.timeIntervalSince1970 * 1000).rounded()) - 1
            let got = try AsOf(parsing: text).cut
            if got.milliseconds != expected || got.counter != .max {
                Issue.record("\(text): \(got) instead of \(Stamp.iso8601(milliseconds: expected))")
                return
            }
            checked += 1
            day = next
        }
        #expect(checked > 10_000)
    }

    @Test func instants() throws {
        #expect(try Self.utc("2022-12-31T23:00:00Z") == 1_672_527_600_000)
        #expect(try Self.utc("2023-01-01T00:00:00+01:00") == 1_672_527_600_000)
        #expect(try Self.utc("2022-12-31t18:00:00-05:00") == 1_672_527_600_000)
        #expect(try Self.utc("2022-12-31T23:00:00.5Z") == 1_672_527_600_500)
        #expect(try Self.utc("2022-12-31T23:00:00.123456789Z") == 1_672_527_600_123)
        // Every stamp in that millisecond counts.
        #expect(try AsOf(parsing: "2022-12-31T23:00:00Z").cut.counter == .max)
    }

    @Test(arguments: [
        "", "0", "yesterday", "2022-12-31 ", "2022-13-01", "2022-02-29", "2022-04-31", "0000-01-01", "22-12-31",
        "2022-12-31T23:00:00", "2022-12-31T24:00:00Z", "2022-12-31T23:60:00Z", "2022-12-31T23:00:00.Z",
        "2022-12-31T23:00:00+1:00", "2022-12-31T23:00Z", "2022-12-31T23:00:00Zjunk",
    ])
    func refusals(text: String) {
        #expect(throws: AsOf.ParseError.self) { try AsOf(parsing: text) }
    }

    /// Any year RFC 3339 and JSON Schema's `date`/`date-time` allow is a moment; before 1970
    /// nothing counts yet, and the far future counts everything.
    @Test func anyYearIsAMoment() throws {
        #expect(try AsOf(parsing: "1969-12-31").cut == .zero)
        #expect(try AsOf(parsing: "0001-01-01").cut == .zero)
        #expect(try AsOf(parsing: "1970-01-01T00:00:00+01:00").cut == .zero)
        #expect(try AsOf(parsing: "0001-01-01T00:00:00.123456-23:59").cut == .zero)
        #expect(try AsOf(parsing: "9999-12-31").cut == AsOf.latest)
        #expect(try AsOf(parsing: "9999-12-31T23:59:59.999-23:59").cut == AsOf.latest)
        #expect(WrittenMoment("9999-12-31T23:59:59.999-23:59") == .instant(milliseconds: 253_402_387_139_999))
        #expect(WrittenMoment("1970-01-02") == .date(days: 1))
        #expect(WrittenMoment("1969-12-31T23:59:59Z") == .instant(milliseconds: -1000))
        #expect(WrittenMoment("0001-01-01") == .date(days: -719_162))
    }
}
