import Foundation
import ProgSyncCore
import Testing

@testable import ProgSyncStore

/// Membership as signed data (#12): admission by a coordinator's record, the coordinator-only
/// rule, and retirement that withholds a node's later commits on every node in any order.
@Suite struct MembershipTests {
    let network = TestNetwork(nodes: [("jenv", "jenv"), ("pol", "politie")])

    /// A node outside the bootstrap registry, and the record writes that admit it.
    struct Newcomer {
        let identity = NodeIdentity()
        let org: String
        var record: String { Membership.recordID(node: identity.id) }
        var admission: [FieldWrite] {
            [FieldWrite(record: record, field: "kind", value: "node"),
             FieldWrite(record: record, field: "org", value: .string(org)),
             FieldWrite(record: record, field: "publicKey", value: .string(identity.publicKeyBase64)),
             FieldWrite(record: record, field: "name", value: "laptop")]
        }
        func replica(_ network: TestNetwork) throws -> Replica {
            var registry = network.registry
            registry.add(PartnerRegistry.Node(org: org, publicKey: identity.publicKey, name: "laptop"))
            let clock = network.clock
            return try Replica(configuration: ReplicaConfiguration(
                path: ":memory:", identity: identity, org: org, registry: registry, now: { clock.now }))
        }
    }

    func observer() throws -> Replica { try network.replica("observer-\(UUID().uuidString)", inMemory: true) }

    @Test func aCommitBeforeItsNodesAdmissionIsHeldThenAppliedInEitherOrder() throws {
        defer { network.cleanUp() }
        let jenv = try network.replica("jenv", inMemory: true)
        let newcomer = Newcomer(org: "politie")
        let laptop = try newcomer.replica(network)
        let own = try laptop.commitLocal(author: "kim", writes: [
            FieldWrite(record: "p.1", field: "owner", value: "politie"), FieldWrite(record: "p.1", field: "title", value: "Controle")])
        let admission = try jenv.commitLocal(author: "coordinator", writes: newcomer.admission)

        let first = try observer()
        let held = try first.apply([own])
        #expect(held.held.map(\.reason) == [.unknownNode])
        let released = try first.apply([admission])
        #expect(released.applied == 2)
        #expect(try first.heldCommits().isEmpty)
        #expect(try first.fields(ofRecord: "p.1")["title"]?.value == "Controle")
        #expect(first.registry.node(newcomer.identity.id)?.org == "politie")

        let second = try observer()
        #expect(try second.apply([admission, own]).applied == 2)
        #expect(try ReplicaSnapshot(first) == ReplicaSnapshot(second))

        #expect(try jenv.apply([own]).applied == 1)
        #expect(try ReplicaSnapshot(jenv) == ReplicaSnapshot(second))
    }

    /// The partnership's records are listed by `progsync partners`; a list of the programme's
    /// records, now or as of a moment, leaves them out.
    @Test func programmeListsLeaveThePartnershipsRecordsOut() throws {
        defer { network.cleanUp() }
        let jenv = try network.replica("jenv", inMemory: true)
        let newcomer = Newcomer(org: "politie")
        try jenv.commitLocal(author: "kim", writes: [
            FieldWrite(record: "p.3", field: "kind", value: "activity"), FieldWrite(record: "p.3", field: "title", value: "Controle")])
        try jenv.commitLocal(author: "coordinator", writes: newcomer.admission + [
            FieldWrite(record: "org:politie", field: "kind", value: "organisation"),
            FieldWrite(record: "org:politie", field: "name", value: "Politie")])
        #expect(try jenv.fields(ofRecord: newcomer.record)["kind"]?.value == "node")
        #expect(try jenv.fields(ofRecord: "org:politie")["kind"]?.value == "organisation")
        #expect(try jenv.recordIDs(RecordQuery()).ids == ["p.3"])
        #expect(try jenv.recordsAsOf(Stamp(rawValue: .max >> 1)).recordIDs(RecordQuery()).ids == ["p.3"])
    }

    @Test func aCoordinatorsAdmissionReleasesWhatItsNodeHeld() throws {
        defer { network.cleanUp() }
        let jenv = try network.replica("jenv", inMemory: true)
        let newcomer = Newcomer(org: "politie")
        let laptop = try newcomer.replica(network)
        let own = try laptop.commitLocal(author: "kim", writes: [FieldWrite(record: "p.2", field: "owner", value: "politie")])
        #expect(try jenv.apply([own]).held.count == 1)
        try jenv.commitLocal(author: "coordinator", writes: newcomer.admission)
        #expect(try jenv.heldCommits().isEmpty)
        #expect(try jenv.fields(ofRecord: "p.2")["owner"]?.value == "politie")
    }

    @Test func onlyACoordinatorChangesThePartnership() throws {
        defer { network.cleanUp() }
        let pol = try network.replica("pol", inMemory: true)
        let newcomer = Newcomer(org: "politie")
        // A local write is refused, not stored.
        #expect(throws: ReplicaError.self) { try pol.commitLocal(author: "x", writes: newcomer.admission) }
        #expect(pol.registry.node(newcomer.identity.id) == nil)

        // The same commit, signed by politie's node and sent to others, is refused everywhere.
        let crafted = try SignedCommit.sign(Commit(
            origin: network.identities["pol"]!.id, seq: 1, stamp: Stamp(milliseconds: network.clock.now, counter: 0),
            schema: ProgrammeSchema.current, author: "x",
            prev: [], changes: newcomer.admission.map { Change(record: $0.record, field: $0.field, value: $0.value) }),
            with: network.identities["pol"]!)
        for receiver in [try network.replica("jenv", inMemory: true), try observer()] {
            let report = try receiver.apply([crafted])
            #expect(report.rejected.map(\.reason) == [.unauthorised], "\(report.rejected)")
            #expect(receiver.registry.node(newcomer.identity.id) == nil)
        }

        // A coordinator cannot make an organisation a coordinator: the trust root fixes them.
        let jenv = try network.replica("jenv", inMemory: true)
        #expect(throws: ReplicaError.self) {
            try jenv.commitLocal(author: "x", writes: [FieldWrite(record: "org:politie", field: "coordinator", value: true)])
        }
        try jenv.commitLocal(author: "x", writes: [FieldWrite(record: "org:politie", field: "kind", value: "organisation"),
                                                   FieldWrite(record: "org:politie", field: "name", value: "Politie"),
                                                   FieldWrite(record: "org:politie", field: "coordinator", value: false)])
        #expect(jenv.registry.orgNames["politie"] == "Politie")
    }

    @Test func aNodeRecordMustCarryTheKeyItsIDIsMadeFrom() throws {
        defer { network.cleanUp() }
        let jenv = try network.replica("jenv", inMemory: true)
        let one = Newcomer(org: "politie"), other = NodeIdentity()
        #expect(throws: ReplicaError.self) {
            try jenv.commitLocal(author: "x", writes: [FieldWrite(record: one.record, field: "publicKey", value: .string(other.publicKeyBase64))])
        }
        #expect(throws: ReplicaError.self) {
            try jenv.commitLocal(author: "x", writes: [FieldWrite(record: one.record, field: "status", value: "ongoing")])
        }
        #expect(throws: ReplicaError.self) {
            try jenv.commitLocal(author: "x", writes: [FieldWrite(record: "node:not-a-node-id", field: "kind", value: "node")])
        }
        #expect(throws: ReplicaError.self) {
            try jenv.commitLocal(author: "x", writes: [FieldWrite(record: "al9", field: "kind", value: "node")])
        }
    }

    /// Retirement after seq 3: commits 4 and 5 are withheld on every node, whether they came
    /// before the retirement (merged, then undone) or after it; earlier ones stay.
    @Test func retirementWithholdsLaterCommitsWhateverTheOrder() throws {
        defer { network.cleanUp() }
        let jenv = try network.replica("jenv", inMemory: true)
        let newcomer = Newcomer(org: "politie")
        let laptop = try newcomer.replica(network)
        let admission = try jenv.commitLocal(author: "coordinator", writes: newcomer.admission)
        var own = [try laptop.commitLocal(author: "kim", writes: [
            FieldWrite(record: "p.3", field: "owner", value: "politie"), FieldWrite(record: "p.3", field: "title", value: "v1")])]
        for n in 2...5 {
            own.append(try laptop.commitLocal(author: "kim", writes: [FieldWrite(record: "p.3", field: "title", value: .string("v\(n)"))]))
        }
        // Someone else's later edit superseding a withheld version stands on its own.
        let retirement = try jenv.commitLocal(author: "coordinator", writes: [FieldWrite(record: newcomer.record, field: "retiredAfter", value: 3)])

        let early = try observer()
        try early.apply([admission] + own)
        #expect(try early.fields(ofRecord: "p.3")["title"]?.value == "v5")
        let undo = try early.apply([retirement])
        #expect(undo.rejected.filter { $0.reason == .retired }.map(\.ref.seq).sorted() == [4, 5])
        #expect(try early.fields(ofRecord: "p.3")["title"]?.value == "v3")
        #expect(early.registry.node(newcomer.identity.id)?.retiredAfter == 3)

        let late = try observer()
        try late.apply([admission, retirement])
        let report = try late.apply(own.reversed())
        #expect(report.rejected.filter { $0.reason == .retired }.count == 2)
        #expect(try late.fields(ofRecord: "p.3")["title"]?.value == "v3")
        #expect(try ReplicaSnapshot(early) == ReplicaSnapshot(late))
        #expect(late.versionVector == early.versionVector, "withheld commits stay in the chain")

        // A later version cannot move the retirement back: the earliest stands.
        try jenv.apply(own)
        let undoRetire = try jenv.commitLocal(author: "coordinator", writes: [FieldWrite(record: newcomer.record, field: "retiredAfter", value: 5)])
        try early.apply([undoRetire])
        #expect(try early.fields(ofRecord: "p.3")["title"]?.value == "v3")
        #expect(early.registry.node(newcomer.identity.id)?.retiredAfter == 3)
        #expect(try ReplicaSnapshot(early) == ReplicaSnapshot(jenv))
        try early.close()
        try late.close()
    }

    /// A withheld coordinator commit no longer counts: a retirement it made goes, and what it
    /// had withheld is merged again.
    @Test func retiringACoordinatorNodeUndoesTheRetirementsItMadeLater() throws {
        defer { network.cleanUp() }
        let jenv = try network.replica("jenv", inMemory: true)
        let laptopOfJenv = Newcomer(org: "jenv"), fieldNode = Newcomer(org: "politie")
        let coordinatorLaptop = try laptopOfJenv.replica(network)
        let field = try fieldNode.replica(network)
        let admissions = try jenv.commitLocal(author: "c", writes: laptopOfJenv.admission + fieldNode.admission)
        try coordinatorLaptop.apply([admissions])
        let work = try field.commitLocal(author: "kim", writes: [FieldWrite(record: "p.4", field: "owner", value: "politie")])
        // The coordinator's laptop (stolen) retires the field node at 0; jenv then retires the laptop at 0.
        let stolen = try coordinatorLaptop.commitLocal(author: "thief", writes: [FieldWrite(record: fieldNode.record, field: "retiredAfter", value: 0)])
        let a = try observer(), b = try observer()
        try a.apply([admissions, work, stolen])
        #expect(try a.fields(ofRecord: "p.4").isEmpty)
        let cut = try jenv.commitLocal(author: "c", writes: [FieldWrite(record: laptopOfJenv.record, field: "retiredAfter", value: 0)])
        try a.apply([cut])
        #expect(try a.fields(ofRecord: "p.4")["owner"]?.value == "politie")
        #expect(a.registry.node(fieldNode.identity.id)?.retiredAfter == nil)
        try b.apply([cut, stolen, work, admissions])
        #expect(try ReplicaSnapshot(a) == ReplicaSnapshot(b))
    }
}
