import Foundation
import ProgSyncCore
import ProgSyncStore
import Testing

/// Commits a misbehaving partner or a crafted file can send: integers at the edges, junk that
/// imitates an honest origin, floods of held commits, and far-ahead stamps (#11). Each must be
/// refused or held without a trap, and without harming what the honest origin sent.
@Suite struct HostileCommitTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie"), ("com", "comensha"), ("receiver", "om")])

    func commit(origin name: String, seq: UInt64, prev: [UInt8] = [], stamp: Stamp? = nil, record: String = "a1",
                field: String = "status", value: JSONValue = "on-track", supersedes: [CommitRef] = [],
                ownerRefs: [String: CommitRef] = [:]) -> Commit {
        Commit(origin: network.identities[name]!.id, seq: seq, stamp: stamp ?? Stamp(milliseconds: network.clock.now, counter: 0),
               author: "x", prev: prev, ownerRefs: ownerRefs,
               changes: [Change(record: record, field: field, value: value, supersedes: supersedes)])
    }

    func signed(_ commit: Commit, by name: String) throws -> SignedCommit {
        try SignedCommit.sign(commit, with: network.identities[name]!)
    }

    /// seq 2^63 used to trap in `ApplyContext.hold` (`Int64(seq)`), unsigned and from anyone.
    @Test(arguments: [UInt64(1) << 63, UInt64.max, 0])
    func seqOutsideTheEnvelopeIsRefusedNotTrapped(seq: UInt64) throws {
        let receiver = try network.replica("receiver", inMemory: true)
        let before = try ReplicaSnapshot(receiver)
        let stranger = NodeIdentity()
        let unknown = try SignedCommit.sign(Commit(
            origin: stranger.id, seq: seq, stamp: Stamp(milliseconds: network.clock.now, counter: 0), author: "x",
            prev: seq == 1 ? [] : [UInt8](repeating: 7, count: 32), changes: [Change(record: "a1", field: "status", value: "on-track")]),
            with: stranger)
        let known = try signed(commit(origin: "pol", seq: seq, prev: [UInt8](repeating: 7, count: 32)), by: "pol")
        let unsigned = SignedCommit(commit: known.commit, signature: [])
        let report = try receiver.apply([unknown, known, unsigned])
        #expect(report.applied == 0)
        #expect(report.held.isEmpty)
        #expect(report.rejected.count == 3)
        #expect(report.rejected.allSatisfy { $0.reason == .invalid })
        #expect(try receiver.heldCommits().isEmpty)
        #expect(try ReplicaSnapshot(receiver) == before)
        #expect(receiver.versionVector.isEmpty)
    }

    /// A reference beyond 2^63 in `supersedes` or `ownerRefs` is refused before it is held.
    @Test func referenceSeqOutsideTheEnvelopeIsRefused() throws {
        let receiver = try network.replica("receiver", inMemory: true)
        let pol = network.identities["pol"]!.id
        let badSupersedes = try signed(commit(origin: "pol", seq: 1, supersedes: [CommitRef(origin: pol, seq: .max)]), by: "pol")
        let badOwnerRef = try signed(commit(origin: "com", seq: 1, ownerRefs: ["a1": CommitRef(origin: pol, seq: 1 << 63)]), by: "com")
        let report = try receiver.apply([badSupersedes, badOwnerRef])
        #expect(report.rejected.map(\.reason) == [.invalid, .invalid])
        #expect(try receiver.heldCommits().isEmpty)
    }

    /// An unsigned commit with the right `prev` used to enter the run before the genuine commit of
    /// the same seq, which was then logged as a fork of an honest origin.
    @Test func junkWithTheRightPrevCannotEvictTheGenuineCommit() throws {
        let pol = try network.replica("pol", inMemory: true)
        let first = try pol.commitLocal(author: "anna", writes: [
            FieldWrite(record: "a1", field: "owner", value: "politie"), FieldWrite(record: "a1", field: "status", value: "on-track"),
        ])
        let genuine = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "status", value: "delayed")])
        for attempt in 0..<16 {
            // Junk at the genuine commit's seq, with every hash order against it.
            var junkCommit = genuine.commit
            junkCommit.changes[0].value = .string("completed-\(attempt)")
            let junk = SignedCommit(commit: junkCommit, signature: [UInt8](repeating: UInt8(attempt), count: 64))
            let receiver = try network.replica("receiver", inMemory: true)
            let report = try receiver.apply(attempt % 2 == 0 ? [first, junk, genuine] : [first, genuine, junk])
            #expect(report.applied == 2, "attempt \(attempt): \(report.rejected)")
            #expect(report.rejected.map(\.reason) == [.badSignature])
            #expect(!(try receiver.rejectedCommits()).contains { $0.reason == .conflictingSequence })
            #expect(try receiver.fields(ofRecord: "a1")["status"]?.value == "delayed")
        }
    }

    /// Two commits the origin really signed for one seq are a fork, whichever arrives first, and
    /// every node keeps the same one.
    @Test func aRealForkKeepsTheSameCommitEverywhere() throws {
        let a = try signed(commit(origin: "pol", seq: 1, record: "a1", field: "owner", value: "politie"), by: "pol")
        let b = try signed(commit(origin: "pol", seq: 1, record: "a2", field: "owner", value: "politie"), by: "pol")
        let r1 = try network.replica("receiver", inMemory: true)
        let r2 = try network.replica("receiver", inMemory: true)
        #expect(try r1.apply([a, b]).rejected.map(\.reason) == [.conflictingSequence])
        #expect(try r2.apply([b, a]).rejected.map(\.reason) == [.conflictingSequence])
        #expect(r1.heads == r2.heads)
    }

    /// Commits waiting behind a gap are checked when they are held: junk is refused, not held.
    @Test func junkBehindAGapIsRefusedNotHeld() throws {
        let pol = try network.replica("pol", inMemory: true)
        var commits: [SignedCommit] = []
        commits.append(try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "owner", value: "politie")]))
        for s in ["on-track", "delayed", "completed"] {
            commits.append(try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "status", value: .string(s))]))
        }
        let receiver = try network.replica("receiver", inMemory: true)
        try receiver.apply([commits[0]])
        // seq 2 is missing: 3 and 4 are genuine and wait; a junk 5 is refused at once.
        var junk = commits[3].commit
        junk.seq = 5
        junk.prev = commits[3].hash
        let report = try receiver.apply([commits[2], commits[3], SignedCommit(commit: junk, signature: [UInt8](repeating: 1, count: 64))])
        #expect(Set(report.held.map(\.ref.seq)) == [3, 4])
        #expect(report.rejected.map(\.reason) == [.badSignature])
        // A lone junk commit with a signature that does not verify is refused too.
        let lone = SignedCommit(commit: commit(origin: "pol", seq: 9, prev: [UInt8](repeating: 3, count: 32)), signature: [UInt8](repeating: 2, count: 64))
        #expect(try receiver.apply([lone]).rejected.map(\.reason) == [.badSignature])
        #expect(try receiver.heldCommits().count == 2)
        // When seq 2 arrives, the held ones apply by themselves.
        let after = try receiver.apply([commits[1]])
        #expect(after.applied == 3)
        #expect(try receiver.heldCommits().isEmpty)
    }

    /// Held and refused rows stay within their limits; the oldest go first.
    @Test func heldAndRefusedRowsAreBounded() throws {
        var limits = ReplicaConfiguration.Limits()
        limits.heldPerOrigin = 5
        limits.heldUnknownOrigins = 4
        limits.rejectedPerOrigin = 3
        let receiver = try network.replica("receiver", inMemory: true, limits: limits)
        // A known origin far ahead of a gap: 12 genuine commits wait for seq 1.
        let pol = try network.replica("pol", inMemory: true)
        var chain: [SignedCommit] = []
        chain.append(try pol.commitLocal(author: "a", writes: [FieldWrite(record: "a1", field: "owner", value: "politie")]))
        for i in 0..<12 {
            chain.append(try pol.commitLocal(author: "a", writes: [FieldWrite(record: "a1", field: "title", value: .string("t\(i)"))]))
        }
        for c in chain.dropFirst() {
            network.clock.advance(1)
            try receiver.apply([c])
        }
        let polHeld = try receiver.heldCommits().filter { $0.ref.origin == network.identities["pol"]!.id }
        #expect(polHeld.count == 5)
        #expect(polHeld.map(\.ref.seq).min() == 9, "the oldest arrivals were dropped")
        // Strangers: each new key is a new origin; together they get one allowance.
        for i in 0..<10 {
            let stranger = NodeIdentity()
            try receiver.apply([try SignedCommit.sign(Commit(
                origin: stranger.id, seq: 1, stamp: Stamp(milliseconds: network.clock.now, counter: UInt16(i)), author: "x", prev: [],
                changes: [Change(record: "z\(i)", field: "title", value: "x")]), with: stranger)])
        }
        #expect(try receiver.heldCommits().filter { $0.reason == .unknownNode }.count == 4)
        // Refused: commits signed by another key under com's origin.
        for i in 0..<8 {
            let forged = try signed(commit(origin: "com", seq: 1, value: .string("v\(i)")), by: "pol")
            try receiver.apply([forged])
        }
        #expect(try receiver.rejectedCommits().filter { $0.ref.origin == network.identities["com"]!.id }.count == 3)
    }

    /// A commit a year ahead, released by an operator, must not drag this node's clock: after a
    /// restart the next local write is stamped near real time and a partner accepts it.
    @Test func aReleasedFarAheadCommitDoesNotDragTheClockAcrossARestart() throws {
        let year: UInt64 = 365 * 24 * 3600 * 1000
        let pol = try network.replica("pol", inMemory: true, clockOffset: Int64(year))
        let ahead = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "owner", value: "politie")])
        var receiver = try network.replica("receiver")
        let held = try receiver.apply([ahead])
        #expect(held.held.map(\.reason) == [.clockAhead])
        let released = try receiver.releaseHeld(hash: ahead.hash)
        #expect(released.applied == 1)
        #expect(receiver.clock.milliseconds <= network.clock.now + 5 * 60 * 1000)
        try receiver.close()
        receiver = try network.replica("receiver")
        #expect(receiver.clock.milliseconds <= network.clock.now + 5 * 60 * 1000, "clock after restart: \(receiver.clock)")
        let write = try receiver.commitLocal(author: "om", writes: [FieldWrite(record: "b1", field: "owner", value: "om")])
        let partner = try network.replica("com", inMemory: true)
        let report = try partner.apply([write])
        #expect(report.applied == 1, "partner held or refused the write: \(report.held) \(report.rejected)")
        try receiver.close()
    }
}

/// Ownership from the causal past (#11 item 3): a partner can change only what its organisation
/// owns, may set `owner` only to create a record, and loses a record the coordinator moved away.
@Suite struct OwnershipTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie"), ("com", "comensha"), ("receiver", "om")])

    /// Signs hand-made commits on politie's chain, as a misbehaving node would.
    struct Forger {
        let identity: NodeIdentity
        let clock: TestClock
        var head: SignedCommit?
        mutating func sign(_ changes: [Change], ownerRefs: [String: CommitRef] = [:]) throws -> SignedCommit {
            clock.advance(1)
            let commit = Commit(
                origin: identity.id, seq: (head?.commit.seq ?? 0) + 1, stamp: Stamp(milliseconds: clock.now, counter: 0),
                author: "mallory", prev: head?.hash ?? [], ownerRefs: ownerRefs, changes: changes)
            let signed = try SignedCommit.sign(commit, with: identity)
            head = signed
            return signed
        }
    }

    /// The coordinator's import: a3 owned by comensha, a4 owned by politie.
    func programme() throws -> (coord: Replica, created: SignedCommit) {
        let coord = try network.replica("coord", inMemory: true)
        let created = try coord.commitLocal(author: "import", writes: [
            FieldWrite(record: "a3", field: "owner", value: "comensha"), FieldWrite(record: "a3", field: "title", value: "Jeugdzorg"),
            FieldWrite(record: "a4", field: "owner", value: "politie"), FieldWrite(record: "a4", field: "title", value: "Training"),
            FieldWrite(record: "a5", field: "owner", value: "politie"), FieldWrite(record: "a5", field: "title", value: "Voorlichting"),
        ])
        return (coord, created)
    }

    func version(_ replica: Replica, _ record: String, _ field: String) throws -> CommitRef {
        try #require(try replica.fields(ofRecord: record)[field]).version.ref
    }

    /// The reproduced finding: politie sets itself as owner of comensha's a3 with an empty
    /// `supersedes`, and in the same commit replaces the title. Then it edits a3 again naming that
    /// commit. Both are refused, and a3 is untouched.
    @Test func aPartnerCannotTakeOverAnotherOrganisationsRecord() throws {
        let (coord, created) = try programme()
        let receiver = try network.replica("receiver", inMemory: true)
        try receiver.apply([created])
        let before = try ReplicaSnapshot(receiver)
        var mallory = Forger(identity: network.identities["pol"]!, clock: network.clock)
        let takeover = try mallory.sign([
            Change(record: "a3", field: "owner", value: "politie"),
            Change(record: "a3", field: "title", value: "Overgenomen", supersedes: [try version(coord, "a3", "title")]),
        ])
        let edit = try mallory.sign([Change(record: "a3", field: "status", value: "completed")], ownerRefs: ["a3": takeover.ref])
        let report = try receiver.apply([takeover, edit])
        #expect(report.applied == 0)
        #expect(report.rejected.map(\.reason) == [.unauthorised, .unauthorised], "\(report.rejected)")
        #expect(try ReplicaSnapshot(receiver) == before)
    }

    /// A claim that names nothing still fails once politie's chain has seen the record's owner.
    @Test func aBlindClaimFailsOnceTheChainHasSeenTheOwner() throws {
        let (coord, created) = try programme()
        let receiver = try network.replica("receiver", inMemory: true)
        try receiver.apply([created])
        var mallory = Forger(identity: network.identities["pol"]!, clock: network.clock)
        // An honest-looking edit of its own a4 names the import commit, which also set a3's owner.
        let ownEdit = try mallory.sign(
            [Change(record: "a4", field: "title", value: "Training 2", supersedes: [try version(coord, "a4", "title")])],
            ownerRefs: ["a4": created.ref])
        let claim = try mallory.sign([Change(record: "a3", field: "owner", value: "politie")])
        let report = try receiver.apply([ownEdit, claim])
        #expect(report.applied == 1)
        #expect(report.rejected.map(\.reason) == [.unauthorised])
        #expect(try receiver.fields(ofRecord: "a3")["owner"]?.value == "comensha")
        #expect(try receiver.conflicts(record: "a3").isEmpty)
    }

    /// The coordinator moves a4 from politie to comensha. politie's later commits that name the
    /// old owner change are refused, on every node whatever the order; comensha may edit.
    @Test func aRecordMovedAwayIsOutOfReachOfItsOldOwner() throws {
        let (coord, created) = try programme()
        var mallory = Forger(identity: network.identities["pol"]!, clock: network.clock)
        let before = try mallory.sign([Change(record: "a4", field: "status", value: "on-track")], ownerRefs: ["a4": created.ref])
        try coord.apply([before])
        network.clock.advance(5)
        let move = try coord.commitLocal(author: "coordinator", writes: [
            FieldWrite(record: "a4", field: "owner", value: "comensha"), FieldWrite(record: "a5", field: "title", value: "Voorlichting 2"),
        ])
        // politie's chain names the move: it edits its own a5 over the title the move wrote.
        let seen = try mallory.sign(
            [Change(record: "a5", field: "title", value: "Voorlichting 3", supersedes: [try version(coord, "a5", "title")])],
            ownerRefs: ["a5": created.ref])
        #expect(try version(coord, "a5", "title") == move.ref)
        // Later it names its old owner change of a4, and nothing of the move: refused all the same.
        let stale = try mallory.sign([Change(record: "a4", field: "status", value: "completed", supersedes: [before.ref])],
                                     ownerRefs: ["a4": created.ref])
        // A direct reference to the move, with the stale owner change, is refused too.
        let named = try mallory.sign([Change(record: "a4", field: "owner", value: "politie", supersedes: [move.ref])])
        let com = try network.replica("com", inMemory: true)
        try com.apply(try allCommits(coord))
        let comEdit = try com.commitLocal(author: "anna", writes: [FieldWrite(record: "a4", field: "status", value: "delayed")])

        var snapshots: [ReplicaSnapshot] = []
        var verdicts: [[String]] = []
        let everything = try allCommits(coord) + [seen, stale, named, comEdit]
        for order in [everything, everything.reversed(), everything.shuffled()] {
            let receiver = try network.replica("receiver", inMemory: true)
            for c in order { try receiver.apply([c]) }
            #expect(try receiver.heldCommits().isEmpty)
            snapshots.append(try ReplicaSnapshot(receiver))
            verdicts.append(try receiver.rejectedCommits().map { "\($0.ref) \($0.reason)" }.sorted())
            #expect(try receiver.fields(ofRecord: "a4")["status"]?.value == "delayed")
            #expect(try receiver.fields(ofRecord: "a4")["owner"]?.value == "comensha")
        }
        #expect(verdicts[0] == ["\(stale.ref) unauthorised", "\(named.ref) unauthorised"].sorted(), "\(verdicts[0])")
        #expect(Set(verdicts.map { $0 }).count == 1)
        #expect(snapshots.allSatisfy { $0 == snapshots[0] })
    }

    /// The local write path applies the same rule: it refuses instead of storing a refused commit.
    @Test func aLocalWriteThePartnersWouldRefuseIsRefusedHere() throws {
        let (coord, created) = try programme()
        let pol = try network.replica("pol", inMemory: true)
        try pol.apply([created])
        #expect(throws: ReplicaError.self) {
            try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a3", field: "status", value: "completed")])
        }
        try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a4", field: "status", value: "completed")])
        #expect(try pol.rejectedCommits().isEmpty)
        _ = coord
    }
}
