import Foundation
import Hummingbird
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// The programme as of a moment (`?asOf=` on `GET /v1/records` and `GET /v1/records/{id}`),
/// computed from the signed log.
extension LocalAPI {
    /// The `asOf` query parameter, if given.
    static func asOf<S: StringProtocol>(_ raw: S?) throws -> AsOf? {
        guard let raw else { return nil }
        do { return try AsOf(parsing: String(raw)) } catch { throw APIError.badRequest("asOf: \(error)") }
    }

    /// One record as it stood then; 404 when it did not exist yet.
    func recordAsOf(_ id: String, _ asOf: AsOf) throws -> Response {
        try Self.checkRecordID(id)
        guard let document = RecordDocument(id: id, rows: try replica.storedRows(ofRecord: id, asOf: asOf.cut)) else {
            throw APIError.notFound("no record \(id) as of \(asOf.text) (\(asOf.instant))")
        }
        return JSONResponse.make(bytes: answer(document))
    }
}

/// The last computed state for a list's `asOf`, so that a client paging through it (the report
/// reads 1,000 records a page) pays for the log pass once. It is reused only while no commit has
/// arrived since, is dropped once its last page has been served, and is not kept for long: it
/// holds every record's fields.
final class AsOfCache: Sendable {
    private let entry = Mutex<(records: RecordsAsOf, at: ContinuousClock.Instant)?>(nil)
    static let keep = Duration.seconds(60)

    func records(_ replica: Replica, _ asOf: AsOf) throws -> RecordsAsOf {
        let now = ContinuousClock.now
        let lastLSN = try replica.lastLSN
        if let hit = entry.withLock({ e -> RecordsAsOf? in
            guard let e, e.records.cut == asOf.cut, e.records.lastLSN == lastLSN, now - e.at < Self.keep else { return nil }
            return e.records
        }) {
            return hit
        }
        entry.withLock { $0 = nil }  // let the old state go before the new one is built
        let records = try replica.recordsAsOf(asOf.cut)
        entry.withLock { $0 = (records, now) }
        return records
    }

    /// Forgets `records` once a client has read to its end.
    func served(_ records: RecordsAsOf, lastPage: Bool) {
        guard lastPage else { return }
        entry.withLock { e in
            if let cached = e?.records, cached.cut == records.cut, cached.lastLSN == records.lastLSN { e = nil }
        }
    }
}
