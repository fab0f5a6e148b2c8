import Foundation
import ProgSyncCore
import ProgSyncReport
import Testing

/// The HTML report is also a page of the web app, which must pass axe-core (WCAG 2.1 AA): its
/// content sits in exactly one main landmark.
struct ReportLandmarkTests {
    @Test func htmlReportHasOneMainLandmark() {
        let report = ProgrammeReport(records: [
            FlatRecord(id: "al1", fields: ["kind": "action-line", "number": 1, "title": "Basis"]),
        ])
        for language in ReportLanguage.allCases {
            let html = ReportRenderer.html(report, options: ReportOptions(language: language))
            #expect(html.components(separatedBy: "<main>").count == 2)
            let main = html.range(of: "<main>")!, h1 = html.range(of: "<h1>")!, end = html.range(of: "</main>")!
            #expect(main.upperBound <= h1.lowerBound && h1.upperBound <= end.lowerBound)
        }
    }
}
