import ProgSyncCore

/// The language of a report.
public enum ReportLanguage: String, Sendable, CaseIterable {
    case nl
    case en
}

/// How many activities have each status (and how many have none).
public struct StatusCounts: Sendable, Equatable {
    public var byStatus: [ProgrammeStatus: Int] = [:]
    public var none = 0

    public init() {}

    public var total: Int { byStatus.values.reduce(none, +) }

    public subscript(status: ProgrammeStatus?) -> Int {
        guard let status else { return none }
        return byStatus[status, default: 0]
    }

    public mutating func add(_ status: ProgrammeStatus?) {
        if let status { byStatus[status, default: 0] += 1 } else { none += 1 }
    }

    public static func + (a: StatusCounts, b: StatusCounts) -> StatusCounts {
        var sum = a
        sum.none += b.none
        for (s, n) in b.byStatus { sum.byStatus[s, default: 0] += n }
        return sum
    }

    /// The legend's order, then "no status".
    public static let order: [ProgrammeStatus?] = ProgrammeStatus.allCases.map { $0 } + [nil]
}

/// The programme as a tree (action lines → results → activities), as the 2021 document shows
/// it. Deleted records are left out; results or activities whose parent is missing are
/// gathered under one extra action line without a number ("Overige" / "Other").
public struct ProgrammeReport: Sendable {
    public struct Activity: Sendable, Equatable {
        public var id: String
        public var number: Int64?
        public var title: String
        public var status: ProgrammeStatus?
        public var owner: String?
        public var partners: [String]
        public var explanation: String?
    }

    public struct Result: Sendable, Equatable {
        public var id: String
        public var number: Int64?
        public var title: String
        public var theme: String?
        public var activities: [Activity]
    }

    public struct ActionLine: Sendable, Equatable {
        public var id: String
        public var number: Int64?
        public var title: String
        public var results: [Result]
        /// True for the gathering place of records whose parent is missing.
        public var isUnplaced: Bool

        public var counts: StatusCounts {
            var c = StatusCounts()
            for result in results { for activity in result.activities { c.add(activity.status) } }
            return c
        }

        public var activityCount: Int { results.reduce(0) { $0 + $1.activities.count } }
    }

    public var actionLines: [ActionLine]

    public var counts: StatusCounts { actionLines.reduce(StatusCounts()) { $0 + $1.counts } }
    public var resultCount: Int { actionLines.reduce(0) { $0 + $1.results.filter { !$0.id.isEmpty }.count } }
    public var activityCount: Int { actionLines.reduce(0) { $0 + $1.activityCount } }

    public init(actionLines: [ActionLine]) {
        self.actionLines = actionLines
    }

    public init(records: [FlatRecord]) {
        let live = records.filter { !$0.isDeleted }
        func order(_ a: (number: Int64?, id: String), _ b: (number: Int64?, id: String)) -> Bool {
            switch (a.number, b.number) {
            case let (x?, y?) where x != y: return x < y
            case (_?, nil): return true
            case (nil, _?): return false
            default: return a.id.utf8.lexicographicallyPrecedes(b.id.utf8)
            }
        }
        func activity(_ r: FlatRecord) -> Activity {
            Activity(
                id: r.id, number: r.number, title: r.title ?? r.id, status: r.status,
                owner: r["owner"]?.stringValue,
                partners: r["partners"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                explanation: r["explanation"]?.stringValue
            )
        }
        let actionLineRecords = live.filter { $0.kind == .actionLine }
        let resultRecords = live.filter { $0.kind == .result }
        let activityRecords = live.filter { $0.kind == .activity }
        let actionLineIDs = Set(actionLineRecords.map(\.id))
        let resultIDs = Set(resultRecords.map(\.id))

        var activitiesByResult: [String: [Activity]] = [:]
        var orphanActivities: [Activity] = []
        for r in activityRecords {
            if let parent = r["result"]?.stringValue, resultIDs.contains(parent) {
                activitiesByResult[parent, default: []].append(activity(r))
            } else {
                orphanActivities.append(activity(r))
            }
        }
        var resultsByLine: [String: [Result]] = [:]
        var orphanResults: [Result] = []
        for r in resultRecords {
            let activities = (activitiesByResult[r.id] ?? []).sorted { order(($0.number, $0.id), ($1.number, $1.id)) }
            let result = Result(
                id: r.id, number: r.number, title: r.title ?? r.id, theme: r["theme"]?.stringValue,
                activities: activities
            )
            if let parent = r["actionLine"]?.stringValue, actionLineIDs.contains(parent) {
                resultsByLine[parent, default: []].append(result)
            } else {
                orphanResults.append(result)
            }
        }
        var lines = actionLineRecords.map { r in
            ActionLine(
                id: r.id, number: r.number, title: r.title ?? r.id,
                results: (resultsByLine[r.id] ?? []).sorted { order(($0.number, $0.id), ($1.number, $1.id)) },
                isUnplaced: false
            )
        }
        lines.sort { order(($0.number, $0.id), ($1.number, $1.id)) }
        if !orphanResults.isEmpty || !orphanActivities.isEmpty {
            var results = orphanResults.sorted { order(($0.number, $0.id), ($1.number, $1.id)) }
            if !orphanActivities.isEmpty {
                results.append(Result(
                    id: "", number: nil, title: "", theme: nil,
                    activities: orphanActivities.sorted { order(($0.number, $0.id), ($1.number, $1.id)) }
                ))
            }
            lines.append(ActionLine(id: "", number: nil, title: "", results: results, isUnplaced: true))
        }
        actionLines = lines
    }
}

/// The words of a report in one language.
struct ReportWords: Sendable {
    var title: String
    var generated: String
    var actionLine: String
    var result: String
    var theme: String
    var number: String
    var activity: String
    var status: String
    var owner: String
    var partners: String
    var explanation: String
    var noStatus: String
    var noActivities: String
    var countsTitle: String
    var overallTitle: String
    var total: String
    var legend: String
    var symbol: String
    var code: String
    var meaning: String
    var unplaced: String
    var withoutResult: String
    var summary: @Sendable (Int, Int, Int) -> String

    static func of(_ language: ReportLanguage) -> ReportWords {
        switch language {
        case .nl:
            ReportWords(
                title: "Programmaresultaten", generated: "Stand van", actionLine: "Actielijn",
                result: "Resultaat", theme: "Thema", number: "Nr.", activity: "Activiteiten / producten",
                status: "Stand van zaken", owner: "Eigenaar", partners: "Partners", explanation: "Toelichting",
                noStatus: "geen status", noActivities: "geen activiteiten", countsTitle: "Stand van zaken per actielijn",
                overallTitle: "Stand van zaken, hele programma",
                total: "Totaal", legend: "Legenda", symbol: "Symbool", code: "Code", meaning: "Betekenis",
                unplaced: "Overige (zonder bestaande actielijn)", withoutResult: "Zonder bestaand resultaat",
                summary: { "\($0) actielijnen, \($1) resultaten, \($2) activiteiten" }
            )
        case .en:
            ReportWords(
                title: "Programme results", generated: "As of", actionLine: "Action line",
                result: "Result", theme: "Theme", number: "No.", activity: "Activities / products",
                status: "Status", owner: "Owner", partners: "Partners", explanation: "Explanation",
                noStatus: "no status", noActivities: "no activities", countsTitle: "Status per action line",
                overallTitle: "Status, whole programme",
                total: "Total", legend: "Legend", symbol: "Symbol", code: "Code", meaning: "Meaning",
                unplaced: "Other (no existing action line)", withoutResult: "Without an existing result",
                summary: { "\($0) action lines, \($1) results, \($2) activities" }
            )
        }
    }

    static let noStatusSymbol = "—"

    func label(_ status: ProgrammeStatus?, _ language: ReportLanguage) -> String {
        guard let status else { return noStatus }
        return language == .nl ? status.dutchLabel : status.englishLabel
    }

    func symbol(_ status: ProgrammeStatus?) -> String { status?.symbol ?? Self.noStatusSymbol }

    func heading(_ line: ProgrammeReport.ActionLine) -> String {
        if line.isUnplaced { return unplaced }
        if let n = line.number { return "\(actionLine) \(n): \(line.title)" }
        return "\(actionLine): \(line.title)"
    }

    func heading(_ result: ProgrammeReport.Result) -> String {
        if result.id.isEmpty { return withoutResult }
        if let n = result.number { return "\(n). \(result.title)" }
        return result.title
    }

    func shortName(_ line: ProgrammeReport.ActionLine) -> String {
        if line.isUnplaced { return unplaced }
        if let n = line.number { return "\(actionLine) \(n)" }
        return line.title
    }
}
