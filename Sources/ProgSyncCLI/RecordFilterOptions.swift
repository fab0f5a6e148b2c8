import ArgumentParser
import ProgSyncCore

/// Filters of `GET /v1/records`, shared by `records list`, `export` and `report`.
struct RecordFilterOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Only this kind: action-line, result or activity.", valueName: "kind"))
    var kind: String?

    @Option(help: ArgumentHelp("Only this status: a code, Dutch or English label, or symbol (e.g. delayed, Voltooid, ✓).", valueName: "status"))
    var status: String?

    @Option(help: ArgumentHelp("Only records owned by this organisation code.", valueName: "org"))
    var owner: String?

    @Option(name: .customLong("result"), help: ArgumentHelp("Only the activities of this result.", valueName: "id"))
    var result: String?

    @Option(name: .customLong("action-line"), help: ArgumentHelp("Only the results of this action line.", valueName: "id"))
    var actionLine: String?

    @Option(name: .customLong("search"), help: ArgumentHelp("Only records whose text contains this.", valueName: "text"))
    var search: String?

    @Flag(help: "Include deleted records.")
    var deleted = false

    @Flag(name: .customLong("only-deleted"), help: "Only deleted records.")
    var onlyDeleted = false

    mutating func validate() throws {
        if let kind, RecordKind(rawValue: kind) == nil {
            throw ValidationError("unknown kind '\(kind)'; use one of: \(RecordKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let status {
            do {
                _ = try FieldInput.status(status)
            } catch {
                throw ValidationError(error.message)
            }
        }
        for (name, value) in [("result", result), ("action-line", actionLine)] {
            if let value, !ProgrammeSchema.isValidRecordID(value) {
                throw ValidationError("--\(name) '\(value)' is not a record id")
            }
        }
    }

    /// The status code the filter asks for.
    var statusCode: String? {
        status.flatMap { try? FieldInput.status($0).rawValue }
    }

    /// The query items of `GET /v1/records` (without limit and offset).
    var queryItems: [(String, String)] {
        var items: [(String, String)] = []
        if let kind { items.append(("kind", kind)) }
        if let statusCode { items.append(("status", statusCode)) }
        if let owner { items.append(("owner", owner)) }
        if let result { items.append(("result", result)) }
        if let actionLine { items.append(("actionLine", actionLine)) }
        if let search { items.append(("q", search)) }
        if onlyDeleted {
            items.append(("deleted", "only"))
        } else if deleted {
            items.append(("deleted", "include"))
        }
        return items
    }
}

extension LocalAPIClient {
    static let pageLimit = 1000

    /// Every record matching `query`, page by page.
    func allRecords(
        query: [(String, String)],
        progress: ((Int, Int) -> Void)? = nil
    ) async throws -> [JSONValue] {
        var records: [JSONValue] = []
        var offset = 0
        while true {
            let page = try await get(
                "/v1/records",
                query: query + [("limit", String(Self.pageLimit)), ("offset", String(offset))]
            )
            let items = page["records"]?.arrayValue ?? []
            records += items
            let total = page["total"]?.intValue.map(Int.init) ?? records.count
            progress?(records.count, total)
            offset += items.count
            if items.isEmpty || offset >= total { break }
        }
        return records
    }
}
