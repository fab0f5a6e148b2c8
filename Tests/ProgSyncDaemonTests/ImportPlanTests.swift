import Foundation
import ProgSyncCore
import ProgSyncStore
import Testing

@testable import ProgSyncDaemon

/// The import's basis rule (`ImportPlan`): a spreadsheet row names the version each value was
/// exported from; only edited cells are written, and an edit to a field that changed since the
/// export becomes a conflict (or, with no basis version, is refused), never a silent revert.
@Suite struct ImportPlanTests {
    /// Two in-memory nodes: the coordinator (jenv) that imports, and a partner (comensha) whose
    /// edits arrive in between.
    struct Pair {
        let jenv: Replica
        let comensha: Replica

        init() throws {
            let coordinator = NodeIdentity()
            let partner = NodeIdentity()
            let registry = PartnerRegistry(
                nodes: [
                    .init(org: "jenv", publicKey: coordinator.publicKey, name: "jenv"),
                    .init(org: "comensha", publicKey: partner.publicKey, name: "comensha"),
                ],
                coordinators: ["jenv"])
            jenv = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: coordinator, org: "jenv", registry: registry))
            comensha = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: partner, org: "comensha", registry: registry))
        }

        /// The partner catches up with the coordinator, writes, and the coordinator receives it.
        func partnerWrites(_ writes: [FieldWrite]) throws {
            try comensha.apply(try jenv.commits(afterLSN: 0, limit: 10_000).map(\.commit))
            let commit = try comensha.commitLocal(author: "anna", writes: writes)
            let report = try jenv.apply([commit])
            #expect(report.applied == 1, "\(report)")
        }
    }

    static let record = "al1.r01.a03"
    static let monday: [String: JSONValue] = [
        "kind": "activity", "result": "al1.r01", "number": 3, "title": "Voorlichting",
        "status": "ongoing", "owner": "comensha", "explanation": "loopt",
    ]

    /// Monday: the record as the sheet holds it, with each field's version (the export's basis).
    static func mondaySheet(_ replica: Replica) throws -> ImportPlan.Row {
        let fields = try replica.fields(ofRecord: record)
        let values = fields.keys.sorted().map { (field: $0, value: fields[$0]!.value) }
        return ImportPlan.Row(id: record, values: values, basis: fields.mapValues(\.version.ref))
    }

    static func setUp() throws -> Pair {
        let pair = try Pair()
        try pair.jenv.commitLocal(
            author: "coordinator",
            writes: monday.keys.sorted().map { FieldWrite(record: record, field: $0, value: monday[$0]!) })
        return pair
    }

    static func edit(_ row: ImportPlan.Row, _ changes: [String: JSONValue]) -> ImportPlan.Row {
        var row = row
        row.values = row.values.map { ($0.field, changes[$0.field] ?? $0.value) }
        for (field, value) in changes where !row.values.contains(where: { $0.field == field }) { row.values.append((field, value)) }
        return row
    }

    @Test func anUneditedSheetWritesNothingEvenAfterNewerEdits() throws {
        let pair = try Self.setUp()
        let sheet = try Self.mondaySheet(pair.jenv)
        let unedited = try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv)
        #expect(unedited.batches.isEmpty && unedited.changed == 0 && unedited.unchanged == Self.monday.count)
        // Tuesday's status must survive Monday's unedited sheet.
        try pair.partnerWrites([FieldWrite(record: Self.record, field: "status", value: "delayed")])
        let later = try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv)
        #expect(later.batches.isEmpty && later.collisions.isEmpty, "\(later.batches)")
    }

    @Test func mondaySheetOnWednesdayMakesAConflictNotARevert() throws {
        let pair = try Self.setUp()
        let sheet = Self.edit(try Self.mondaySheet(pair.jenv), ["status": "completed", "explanation": "klaar"])
        try pair.partnerWrites([FieldWrite(record: Self.record, field: "status", value: "delayed")])
        let tuesday = try #require(try pair.jenv.fields(ofRecord: Self.record)["status"]).version

        let plan = try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv)
        #expect(plan.changed == 1)  // explanation: nobody touched it since Monday
        #expect(plan.unchanged == Self.monday.count - 2)
        #expect(plan.collisions.map { "\($0.record) \($0.field) \($0.decision.isConflict)" } == ["\(Self.record) status true"])
        #expect(plan.collisions.first?.current == tuesday.ref)
        try pair.jenv.commitLocalBatch(author: "coordinator", commits: plan.batches)

        let fields = try pair.jenv.fields(ofRecord: Self.record)
        #expect(fields["explanation"]?.value == "klaar")
        let status = try #require(fields["status"])
        let values = Set(([status.version] + status.losers).map { String(decoding: $0.value, as: UTF8.self) })
        #expect(values == ["\"completed\"", "\"delayed\""], "Tuesday's value is kept next to the sheet's")
        #expect(try pair.jenv.conflicts().map(\.field) == ["status"])

        // The partner receives the import and reaches the same conflict.
        try pair.comensha.apply(try pair.jenv.commits(afterLSN: 0, limit: 10_000).map(\.commit))
        #expect(try pair.comensha.conflicts() == pair.jenv.conflicts())

        // Importing the same sheet again changes nothing: the node already holds its values.
        let again = try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv)
        #expect(again.batches.isEmpty && again.collisions.isEmpty)
    }

    @Test func anEditOfAFieldNobodyChangedSupersedesItPlainly() throws {
        let pair = try Self.setUp()
        let sheet = Self.edit(try Self.mondaySheet(pair.jenv), ["title": "Voorlichting scholen"])
        try pair.partnerWrites([FieldWrite(record: Self.record, field: "status", value: "delayed")])
        let plan = try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv)
        #expect(plan.changed == 1 && plan.collisions.isEmpty)
        try pair.jenv.commitLocalBatch(author: "coordinator", commits: plan.batches)
        #expect(try pair.jenv.conflicts().isEmpty)
        #expect(try pair.jenv.fields(ofRecord: Self.record)["status"]?.value == "delayed")
    }

    @Test func aCellEmptyAtTheExportAndSetSinceIsRefused() throws {
        let pair = try Self.setUp()
        let sheet = Self.edit(try Self.mondaySheet(pair.jenv), ["theme": "preventie"])
        try pair.partnerWrites([FieldWrite(record: Self.record, field: "theme", value: "opsporing")])
        let plan = try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv)
        #expect(plan.collisions.map(\.decision) == [.refuse])
        #expect(plan.batches.isEmpty)
    }

    @Test func aRowWithoutBasisWritesOnlyWhatDiffers() throws {
        let pair = try Self.setUp()
        var sheet = Self.edit(try Self.mondaySheet(pair.jenv), ["title": "Anders"])
        sheet.basis = nil
        let plan = try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv)
        #expect(plan.changed == 1 && plan.unchanged == Self.monday.count - 1 && plan.rowsWithBasis == 0)
        #expect(plan.batches == [[FieldWrite(record: Self.record, field: "title", value: "Anders")]])
    }

    @Test func aBasisThisNodeDoesNotHoldIsRefusedWhole() throws {
        let pair = try Self.setUp()
        var sheet = Self.edit(try Self.mondaySheet(pair.jenv), ["title": "Anders"])
        let stranger = CommitRef(origin: NodeID(publicKey: NodeIdentity().publicKey), seq: 4)
        sheet.basis?["title"] = stranger
        #expect(throws: APIError.self) { try ImportPlan(rows: [sheet], defaultOwner: "jenv", replica: pair.jenv) }
        // The store refuses it too, so no other caller can claim to supersede an unseen version.
        #expect(throws: ReplicaError.self) {
            try pair.jenv.commitLocal(author: "x", writes: [FieldWrite(record: Self.record, field: "title", value: "Anders", basis: stranger)])
        }
        // A version of another field of a commit it holds is not a version of this field.
        let kindRef = try #require(try pair.jenv.fields(ofRecord: Self.record)["kind"]).version.ref
        try pair.jenv.commitLocal(author: "x", writes: [FieldWrite(record: Self.record, field: "title", value: "Nieuw")])
        #expect(sheet.basis?["status"] == kindRef)  // one commit wrote every Monday field
        #expect(throws: ReplicaError.self) {
            try pair.jenv.commitLocal(author: "x", writes: [FieldWrite(record: Self.record, field: "theme", value: "t", basis: kindRef)])
        }
        // An older version of the field itself is accepted: it is in the log.
        try pair.jenv.commitLocal(author: "x", writes: [FieldWrite(record: Self.record, field: "title", value: "Derde", basis: kindRef)])
        #expect(try pair.jenv.conflicts().map(\.field) == ["title"])
    }

    @Test func decisionTable() {
        let me = NodeID(publicKey: NodeIdentity().publicKey)
        let v1 = FieldVersion(value: Array("\"a\"".utf8), stamp: Stamp(rawValue: 1 << 20), origin: me, seq: 1)
        let v2 = FieldVersion(value: Array("\"b\"".utf8), stamp: Stamp(rawValue: 2 << 20), origin: me, seq: 2)
        let atV1 = FieldState(value: "a", version: v1, losers: [])
        let atV2 = FieldState(value: "b", version: v2, losers: [])
        let conflicted = FieldState(value: "a", version: v1, losers: [v2])
        typealias P = ImportPlan
        // No basis for the row.
        #expect(P.decide(value: "a", basis: nil, current: atV1, basisValue: nil) == .unchanged)
        #expect(P.decide(value: "c", basis: nil, current: atV1, basisValue: nil) == .write(basis: nil))
        #expect(P.decide(value: "c", basis: nil, current: nil, basisValue: nil) == .write(basis: nil))
        // Empty at the export.
        #expect(P.decide(value: "c", basis: .some(nil), current: nil, basisValue: nil) == .write(basis: nil))
        #expect(P.decide(value: "c", basis: .some(nil), current: atV1, basisValue: nil) == .refuse)
        #expect(P.decide(value: "a", basis: .some(nil), current: atV1, basisValue: nil) == .unchanged)
        // A basis version.
        #expect(P.decide(value: "a", basis: v1.ref, current: atV2, basisValue: "a") == .unchanged)
        #expect(P.decide(value: "b", basis: v1.ref, current: atV2, basisValue: "a") == .unchanged)
        #expect(P.decide(value: "c", basis: v1.ref, current: atV1, basisValue: "a") == .write(basis: v1.ref))
        #expect(P.decide(value: "c", basis: v1.ref, current: atV2, basisValue: "a") == .conflict(basis: v1.ref))
        #expect(P.decide(value: "c", basis: v1.ref, current: conflicted, basisValue: "a") == .conflict(basis: v1.ref))
    }
}
