import ProgSyncCore
import ProgSyncStore

/// How an import applies a file. Each row may name its basis: for every field, the version it
/// was exported from (`progsync export` writes it). Only cells that differ from that basis are
/// written, and a cell edited in the file whose field has changed here since the export is
/// never applied silently: it supersedes only its basis, so the newer version stays as a
/// competing one and the field shows up in `conflicts list`. A row without a basis (a sheet
/// made by hand) writes every cell that differs from what this node holds.
struct ImportPlan: Sendable {
    /// One record of the import body.
    struct Row: Sendable {
        var id: String
        var values: [(field: String, value: JSONValue)]
        /// Field → the version exported; nil when the row names no basis. A field the basis
        /// leaves out was empty at the export.
        var basis: [String: CommitRef]?
    }

    /// What one cell does.
    enum Decision: Equatable, Sendable {
        case unchanged
        /// Written; supersedes `basis`, or what the node holds now when nil.
        case write(basis: CommitRef?)
        /// Edited in the file while the field changed here: written against its basis only.
        case conflict(basis: CommitRef)
        /// Edited in the file, but the field was empty at the export and has been set since:
        /// there is no basis version to supersede, so the cell is left out.
        case refuse
    }

    struct Collision: Sendable {
        var record: String
        var field: String
        var decision: Decision
        var basis: CommitRef?
        var current: CommitRef?
    }

    var batches: [[FieldWrite]] = [[]]
    var changed = 0
    var unchanged = 0
    var collisions: [Collision] = []
    var rowsWithBasis = 0
    var records = 0

    static let changesPerCommit = 500

    /// The rule for one cell: `current` is the field here now, `basisValue` the value of the
    /// version the row was exported from.
    static func decide(value: JSONValue, basis: CommitRef??, current: FieldState?, basisValue: JSONValue?) -> Decision {
        if current?.value == value { return .unchanged }
        guard let basis else { return .write(basis: nil) }  // no basis for the row
        guard let basis else { return current == nil ? .write(basis: nil) : .refuse }  // empty at the export
        if value == basisValue { return .unchanged }  // not edited in the file
        if let current, current.version.ref == basis, current.losers.isEmpty { return .write(basis: basis) }
        return .conflict(basis: basis)
    }

    /// Reads and checks the body's records (nothing is written).
    static func rows(_ list: [JSONValue]) throws -> [Row] {
        var rows: [Row] = []
        var seen = Set<String>()
        for (index, item) in list.enumerated() {
            guard case .object(let object) = item, let id = object["id"]?.stringValue else {
                throw APIError.invalid("record \(index): needs an \"id\"")
            }
            guard ProgrammeSchema.isValidRecordID(id) else { throw APIError.invalid("record \(index) (\(id.prefix(140))): invalid id") }
            guard seen.insert(id).inserted else { throw APIError.invalid("record \(index) (\(id)): id given twice") }
            var row = Row(id: id, values: [], basis: nil)
            for name in object.keys.sorted() where name != "id" && name != "basis" {
                var value = object[name]!
                if name == "status", let text = value.stringValue, let status = ProgrammeStatus(userInput: text) { value = .string(status.rawValue) }
                do { try ProgrammeSchema.validate(field: name, value: value) } catch {
                    throw APIError.invalid("record \(index) (\(id)): \(error)")
                }
                row.values.append((name, value))
            }
            if let basis = object["basis"] {
                guard case .object(let refs) = basis else {
                    throw APIError.invalid("record \(index) (\(id)): basis must be an object of field: \"origin/seq\"")
                }
                row.basis = try refs.mapValues { text in
                    guard let ref = text.stringValue.flatMap({ CommitRef(text: $0) }) else {
                        throw APIError.invalid("record \(index) (\(id)): basis \(text.canonicalString.prefix(80)) is not origin/seq")
                    }
                    return ref
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// Compares the rows with the replica and builds the commits: at most `changesPerCommit`
    /// changes each, a record never split across two.
    init(rows: [Row], defaultOwner: String, replica: Replica) throws {
        var bases = Set<FieldVersionKey>()
        for row in rows {
            for (field, ref) in row.basis ?? [:] { bases.insert(FieldVersionKey(record: row.id, field: field, ref: ref)) }
        }
        let snapshot = try replica.importSnapshot(records: rows.map(\.id), bases: bases)
        for key in bases where snapshot.basisValues[key] == nil {
            throw APIError.invalid("record \(key.record) field \(key.field): basis \(key.ref) is not a version of that field this node holds; export the file again from this node")
        }
        records = rows.count
        for row in rows {
            let current = snapshot.fields[row.id] ?? [:]
            if row.basis != nil { rowsWithBasis += 1 }
            var writes: [FieldWrite] = []
            for (field, value) in row.values {
                let basis: CommitRef?? = row.basis.map { $0[field] }
                let basisValue = (basis ?? nil).flatMap { snapshot.basisValues[FieldVersionKey(record: row.id, field: field, ref: $0)] }
                let decision = Self.decide(value: value, basis: basis, current: current[field], basisValue: basisValue)
                switch decision {
                case .unchanged:
                    unchanged += 1
                    continue
                case .write(let ref):
                    changed += 1
                    writes.append(FieldWrite(record: row.id, field: field, value: value, basis: ref))
                case .conflict(let ref):
                    writes.append(FieldWrite(record: row.id, field: field, value: value, basis: ref))
                case .refuse:
                    break
                }
                if decision == .refuse || decision.isConflict {
                    collisions.append(Collision(
                        record: row.id, field: field, decision: decision, basis: basis ?? nil, current: current[field]?.version.ref))
                }
            }
            if current["owner"] == nil, !row.values.contains(where: { $0.field == "owner" }) {
                writes.append(FieldWrite(record: row.id, field: "owner", value: .string(defaultOwner)))
            }
            if batches[batches.count - 1].count + writes.count > Self.changesPerCommit { batches.append([]) }
            batches[batches.count - 1] += writes
        }
        batches.removeAll { $0.isEmpty }
    }

    var fieldChanges: Int { batches.reduce(0) { $0 + $1.count } }

    /// The answer of `POST /v1/import`, given the commits made.
    func answer(commits: Int) -> JSONValue {
        .object([
            "records": .int(Int64(records)), "commits": .int(Int64(commits)), "changes": .int(Int64(fieldChanges)),
            "changed": .int(Int64(changed)), "unchanged": .int(Int64(unchanged)), "withBasis": .int(Int64(rowsWithBasis)),
            "collisions": .array(collisions.map { c in
                .object([
                    "record": .string(c.record), "field": .string(c.field),
                    "outcome": .string(c.decision.isConflict ? "conflict" : "refused"),
                    "basis": c.basis.map { .string($0.description) } ?? .null,
                    "current": c.current.map { .string($0.description) } ?? .null,
                ])
            }),
        ])
    }
}

extension ImportPlan.Decision {
    var isConflict: Bool { if case .conflict = self { true } else { false } }
}
