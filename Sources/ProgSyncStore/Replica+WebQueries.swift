import GRDB
import ProgSyncCore

extension Replica {
    /// Every field of each record, read in one transaction so a page shows one moment.
    public func fields(ofRecords records: [String]) throws -> [String: [String: FieldState]] {
        try pool.read { db in
            var out: [String: [String: FieldState]] = [:]
            for record in records where out[record] == nil {
                out[record] = try Self.fields(db, record: record)
            }
            return out
        }
    }

    /// How many live records of `kind` have each status value (canonical JSON text, nil: none).
    public func statusCounts(kind: RecordKind) throws -> [String?: Int] {
        try lists.value(.statusCounts(kind)) { try countStatuses(kind: kind) }
    }

    private func countStatuses(kind: RecordKind) throws -> [String?: Int] {
        try pool.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT s.value, count(*) FROM fields k
                LEFT JOIN fields s ON s.record = k.record AND s.field = 'status'
                WHERE k.field = 'kind' AND k.value = ?
                AND NOT EXISTS (SELECT 1 FROM fields d WHERE d.record = k.record AND d.field = 'deleted' AND d.value = 'true')
                GROUP BY s.value
                """, arguments: [JSONValue.string(kind.rawValue).canonicalString])
            var out: [String?: Int] = [:]
            for row in rows { out[row[0] as String?] = row[1] }
            return out
        }
    }
}
