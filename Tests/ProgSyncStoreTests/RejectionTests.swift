import Foundation
import ProgSyncCore
import ProgSyncStore
import Testing

/// One test per way a remote commit can be refused or held. Each asserts that the receiving
/// replica's state and digest did not change and that the reason can be queried.
@Suite struct RejectionTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie"), ("com", "comensha"), ("receiver", "om")])

    /// politie's node creates a record it owns; the receiver has it.
    func setUp() throws -> (pol: Replica, receiver: Replica, created: SignedCommit) {
        let pol = try network.replica("pol", inMemory: true)
        let created = try pol.commitLocal(author: "anna", writes: [
            FieldWrite(record: "a1", field: "kind", value: "activity"),
            FieldWrite(record: "a1", field: "owner", value: "politie"),
            FieldWrite(record: "a1", field: "status", value: "on-track"),
        ])
        let receiver = try network.replica("receiver", inMemory: true)
        try receiver.apply([created])
        return (pol, receiver, created)
    }

    /// Re-signs nothing: alters the content and keeps the old signature.
    func tampered(_ c: SignedCommit, _ edit: (inout Commit) -> Void) -> SignedCommit {
        var commit = c.commit
        edit(&commit)
        return SignedCommit(commit: commit, signature: c.signature)
    }

    func signed(_ commit: Commit, by name: String) throws -> SignedCommit {
        try SignedCommit.sign(commit, with: network.identities[name]!)
    }

    func next(after c: SignedCommit, changes: [Change], ownerRefs: [String: CommitRef] = [:]) -> Commit {
        Commit(origin: c.commit.origin, seq: c.commit.seq + 1, stamp: Stamp(rawValue: c.commit.stamp.rawValue + 1),
               author: "anna", prev: c.hash, ownerRefs: ownerRefs, changes: changes)
    }

    func expectRefused(_ commit: SignedCommit, _ reason: CommitVerdict.Reason, receiver: Replica, held: Bool = false, _ label: String = "",
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = try ReplicaSnapshot(receiver)
        let vector = receiver.versionVector
        let report = try receiver.apply([commit])
        #expect(report.applied == 0, "\(label)", sourceLocation: sourceLocation)
        if held {
            #expect(report.held.map(\.reason) == [reason], "\(label): \(report.held)", sourceLocation: sourceLocation)
            #expect(try receiver.heldCommits().contains { $0.hash == commit.hash && $0.reason == reason }, "\(label)", sourceLocation: sourceLocation)
        } else {
            #expect(report.rejected.map(\.reason) == [reason], "\(label): \(report.rejected)", sourceLocation: sourceLocation)
            #expect(try receiver.rejectedCommits().contains { $0.hash == commit.hash && $0.reason == reason }, "\(label)", sourceLocation: sourceLocation)
        }
        #expect(try ReplicaSnapshot(receiver) == before, "\(label)", sourceLocation: sourceLocation)
        #expect(receiver.versionVector == vector || reason == .unauthorised || reason == .invalid, "\(label)", sourceLocation: sourceLocation)
    }

    @Test func alteredValueIsRefused() throws {
        let (pol, receiver, created) = try setUp()
        let good = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "status", value: "delayed")])
        let bad = tampered(good) { $0.changes[0].value = "completed" }
        try expectRefused(bad, .badSignature, receiver: receiver)
        _ = created
    }

    @Test func alteredStampIsRefused() throws {
        let (pol, receiver, _) = try setUp()
        let good = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "status", value: "delayed")])
        let bad = tampered(good) { $0.stamp = Stamp(rawValue: $0.stamp.rawValue + (1 << 20)) }
        try expectRefused(bad, .badSignature, receiver: receiver)
    }

    @Test func commitSignedWithAnotherKeyIsRefused() throws {
        let (_, receiver, created) = try setUp()
        let forged = try signed(next(after: created, changes: [Change(record: "a1", field: "status", value: "completed")]), by: "com")
        try expectRefused(forged, .badSignature, receiver: receiver)
    }

    @Test func replayedSequenceWithOtherContentIsRefused() throws {
        let (_, receiver, created) = try setUp()
        // The same commit again is a harmless no-op ...
        let again = try receiver.apply([created])
        #expect(again.duplicates == 1 && again.applied == 0 && again.rejected.isEmpty)
        // ... but a different, validly signed commit for a used seq is a fork or replay.
        var other = created.commit
        other.changes = [Change(record: "a1", field: "status", value: "completed")]
        other.ownerRefs = [:]
        other.changes.append(Change(record: "a1", field: "owner", value: "politie"))
        try expectRefused(try signed(other, by: "pol"), .conflictingSequence, receiver: receiver)
    }

    @Test func gapIsHeldUntilFilled() throws {
        let (pol, receiver, _) = try setUp()
        let second = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "status", value: "delayed")])
        let third = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a1", field: "title", value: "Training")])
        try expectRefused(third, .gap, receiver: receiver, held: true)
        let report = try receiver.apply([second])
        #expect(report.applied == 2)
        #expect(try receiver.heldCommits().isEmpty)
        #expect(try receiver.fields(ofRecord: "a1")["title"]?.value == "Training")
    }

    @Test func unauthorisedOwnerChangeIsRefused() throws {
        let (_, receiver, _) = try setUp()
        let com = try network.replica("com", inMemory: true)
        try com.apply(try allCommits(receiver))
        // comensha's node tries to take politie's record.
        let first = Commit(origin: com.nodeID, seq: 1, stamp: Stamp(milliseconds: network.clock.now, counter: 5), author: "eve", prev: [],
                           changes: [Change(record: "a1", field: "owner", value: "comensha",
                                            supersedes: [CommitRef(origin: network.identities["pol"]!.id, seq: 1)])])
        try expectRefused(try signed(first, by: "com"), .unauthorised, receiver: receiver)
    }

    @Test func editWithForgedOwnerReferenceIsRefused() throws {
        let (_, receiver, created) = try setUp()
        // comensha claims ownership by pointing at politie's creation commit.
        let first = Commit(origin: network.identities["com"]!.id, seq: 1, stamp: Stamp(milliseconds: network.clock.now, counter: 5),
                           author: "eve", prev: [], ownerRefs: ["a1": created.ref],
                           changes: [Change(record: "a1", field: "status", value: "completed", supersedes: [created.ref])])
        try expectRefused(try signed(first, by: "com"), .unauthorised, receiver: receiver)
    }

    @Test func oversizeValueIsRefused() throws {
        let (_, receiver, created) = try setUp()
        let big = JSONValue.string(String(repeating: "x", count: ProgrammeSchema.maxValueBytes + 1))
        let commit = try signed(next(after: created, changes: [Change(record: "a1", field: "explanation", value: big)],
                                     ownerRefs: ["a1": created.ref]), by: "pol")
        try expectRefused(commit, .invalid, receiver: receiver)
    }

    @Test func invalidStatusIsRefused() throws {
        let (_, receiver, created) = try setUp()
        let commit = try signed(next(after: created, changes: [Change(record: "a1", field: "status", value: "done")],
                                     ownerRefs: ["a1": created.ref]), by: "pol")
        try expectRefused(commit, .invalid, receiver: receiver)
    }

    @Test func validlySignedCommitWithWrongPrevIsABrokenChain() throws {
        let (_, receiver, created) = try setUp()
        var commit = next(after: created, changes: [Change(record: "a1", field: "status", value: "completed", supersedes: [created.ref])],
                          ownerRefs: ["a1": created.ref])
        commit.prev = [UInt8](repeating: 7, count: 32)
        try expectRefused(try signed(commit, by: "pol"), .brokenChain, receiver: receiver)
        // The same with a signature that does not verify is a forgery, not a broken chain.
        try expectRefused(tampered(try signed(commit, by: "pol")) { $0.author = "mallory" }, .badSignature, receiver: receiver)
    }

    /// Each way a validly signed, correctly chained commit can break the schema or the commit
    /// rules (CommitRules.validate). Each is refused as invalid and changes nothing.
    typealias Shape = (changes: [Change], author: String, ownerRefs: [String: CommitRef])
    static let invalidCommits: [(String, @Sendable (_ created: SignedCommit) -> Shape)] = [
        ("no changes", { c in ([], "anna", ["a1": c.ref]) }),
        ("too many changes", { c in
            ((0...CommitRules.maxChangesPerCommit).map { Change(record: "n\($0)", field: "kind", value: "activity") }, "anna", [:])
        }),
        ("author too long", { c in
            ([Change(record: "a1", field: "status", value: "delayed")], String(repeating: "a", count: CommitRules.maxAuthorBytes + 1), ["a1": c.ref])
        }),
        ("bad record id", { c in ([Change(record: "A1 B", field: "owner", value: "politie")], "anna", [:]) }),
        ("unknown field", { c in ([Change(record: "a1", field: "colour", value: "red")], "anna", ["a1": c.ref]) }),
        ("wrong value type", { c in ([Change(record: "a1", field: "number", value: "twelve")], "anna", ["a1": c.ref]) }),
        ("a field twice", { c in
            ([Change(record: "a1", field: "status", value: "delayed"), Change(record: "a1", field: "status", value: "completed")], "anna", ["a1": c.ref])
        }),
        ("supersedes its own future", { c in
            ([Change(record: "a1", field: "status", value: "delayed", supersedes: [CommitRef(origin: c.commit.origin, seq: 9)])], "anna", ["a1": c.ref])
        }),
        ("owner reference points forward", { c in
            ([Change(record: "a1", field: "status", value: "delayed")], "anna", ["a1": CommitRef(origin: c.commit.origin, seq: 9)])
        }),
    ]

    @Test(arguments: 0..<invalidCommits.count) func invalidCommitIsRefused(_ index: Int) throws {
        let (name, make) = Self.invalidCommits[index]
        let (_, receiver, created) = try setUp()
        let shape = make(created)
        var commit = next(after: created, changes: shape.changes, ownerRefs: shape.ownerRefs)
        commit.author = shape.author
        try expectRefused(try signed(commit, by: "pol"), .invalid, receiver: receiver, "\(name)")
    }

    @Test func unknownKeyIsHeldThenAppliedWhenRegistered() throws {
        let (_, receiver, _) = try setUp()
        let stranger = NodeIdentity()
        let commit = try SignedCommit.sign(
            Commit(origin: stranger.id, seq: 1, stamp: Stamp(milliseconds: network.clock.now, counter: 0), author: "x", prev: [],
                   changes: [Change(record: "n1", field: "owner", value: "nla")]), with: stranger)
        try expectRefused(commit, .unknownNode, receiver: receiver, held: true)
        var registry = network.registry
        registry.add(PartnerRegistry.Node(org: "nla", publicKey: stranger.publicKey))
        try receiver.updateRegistry(registry)
        #expect(try receiver.heldCommits().isEmpty)
        #expect(try receiver.fields(ofRecord: "n1")["owner"]?.value == "nla")
    }

    @Test func clockFarAheadIsHeldUntilReleased() throws {
        let (_, receiver, _) = try setUp()
        let laptop = try network.replica("com", inMemory: true, clockOffset: 24 * 3600 * 1000)
        let ahead = try laptop.commitLocal(author: "kim", writes: [FieldWrite(record: "c1", field: "owner", value: "comensha")])
        let clockBefore = receiver.clock
        try expectRefused(ahead, .clockAhead, receiver: receiver, held: true)
        #expect(receiver.clock == clockBefore, "a held commit must not move the clock")
        let report = try receiver.releaseHeld(hash: ahead.hash)
        #expect(report.applied == 1)
        #expect(try receiver.heldCommits().isEmpty)
    }

    @Test func refusedCommitKeepsTheChainSoLaterCommitsApply() throws {
        let (_, receiver, created) = try setUp()
        let bad = try signed(next(after: created, changes: [Change(record: "a1", field: "status", value: "done")],
                                  ownerRefs: ["a1": created.ref]), by: "pol")
        let good = try signed(next(after: bad, changes: [Change(record: "a1", field: "status", value: "completed", supersedes: [created.ref])],
                                   ownerRefs: ["a1": created.ref]), by: "pol")
        let report = try receiver.apply([bad, good])
        #expect(report.rejected.map(\.reason) == [.invalid])
        #expect(report.applied == 1)
        #expect(try receiver.fields(ofRecord: "a1")["status"]?.value == "completed")
    }
}

@Suite struct DurabilityTests {
    @Test func everyCommitIsSyncedToDisk() throws {
        let network = TestNetwork(nodes: [("coord", "jenv")])
        defer { network.cleanUp() }
        let replica = try network.replica("coord")
        #expect(try replica.writerSynchronousMode == 2, "synchronous must be FULL on the writer")
        try replica.close()
    }
}
