import ProgSyncCore

/// Options of a rendered report.
public struct ReportOptions: Sendable {
    public var language: ReportLanguage
    /// Shown under the title, e.g. `2024-05-01`; nil leaves the line out.
    public var date: String?
    /// Also print each activity's explanation.
    public var details: Bool

    public init(language: ReportLanguage = .nl, date: String? = nil, details: Bool = false) {
        self.language = language
        self.date = date
        self.details = details
    }
}

/// Renders a ``ProgrammeReport`` as Markdown or as one self-contained HTML page.
public enum ReportRenderer {
    // MARK: Markdown

    public static func markdown(_ report: ProgrammeReport, options: ReportOptions = ReportOptions()) -> String {
        let w = ReportWords.of(options.language)
        let lang = options.language
        var out: [String] = ["# \(md(w.title))", ""]
        var intro = w.summary(report.actionLines.filter { !$0.isUnplaced }.count, report.resultCount, report.activityCount)
        if let date = options.date { intro = "\(w.generated) \(date) · " + intro }
        out += [md(intro), ""]

        for line in report.actionLines {
            out += ["## \(md(w.heading(line)))", ""]
            if line.results.isEmpty { out += ["*\(md(w.noActivities))*", ""] }
            for result in line.results {
                out += ["### \(md(w.heading(result)))", ""]
                if let theme = result.theme, !theme.isEmpty { out += ["\(md(w.theme)): *\(md(theme))*", ""] }
                guard !result.activities.isEmpty else {
                    out += ["*\(md(w.noActivities))*", ""]
                    continue
                }
                out.append("| \(w.number) | \(md(w.activity)) | \(md(w.status)) | \(md(w.owner)) | \(md(w.partners)) |")
                out.append("|---:|---|---|---|---|")
                for a in result.activities {
                    let number = a.number.map(String.init) ?? ""
                    let status = "\(w.symbol(a.status)) \(w.label(a.status, lang))"
                    out.append("| \(number) | \(md(a.title)) | \(md(status)) | \(md(a.owner ?? "—")) | \(md(a.partners.isEmpty ? "—" : a.partners.joined(separator: ", "))) |")
                }
                out.append("")
                if options.details {
                    for a in result.activities {
                        guard let text = a.explanation, !text.isEmpty else { continue }
                        let number = a.number.map { "\($0). " } ?? ""
                        out += ["**\(md(number + a.title))** — \(md(text))", ""]
                    }
                }
            }
        }

        out += ["## \(md(w.countsTitle))", ""]
        let lines = report.actionLines
        out.append("| \(md(w.status)) | " + lines.map { md(w.shortName($0)) }.joined(separator: " | ") + " | \(md(w.total)) |")
        out.append("|---|" + String(repeating: "---:|", count: lines.count + 1))
        let perLine = lines.map(\.counts)
        let overall = report.counts
        for status in StatusCounts.order {
            let cells = perLine.map { String($0[status]) } + [String(overall[status])]
            out.append("| \(w.symbol(status)) \(md(w.label(status, lang))) | " + cells.joined(separator: " | ") + " |")
        }
        let totals = perLine.map { "**\($0.total)**" } + ["**\(overall.total)**"]
        out.append("| **\(md(w.total))** | " + totals.joined(separator: " | ") + " |")
        out.append("")

        out += ["## \(md(w.legend))", ""]
        out.append("| \(md(w.symbol)) | \(md(w.code)) | \(md(w.meaning)) |")
        out.append("|---|---|---|")
        for status in ProgrammeStatus.allCases {
            out.append("| \(status.symbol) | `\(status.rawValue)` | \(md(w.label(status, lang))) |")
        }
        out.append("| \(ReportWords.noStatusSymbol) | | \(md(w.noStatus)) |")
        out.append("")
        return out.joined(separator: "\n")
    }

    /// Text safe inside Markdown (and a Markdown table cell): one line, with the characters
    /// that would start markup or HTML escaped by a backslash.
    public static func md(_ text: String) -> String {
        var out = ""
        for character in TextTable.singleLine(text) {
            switch character {
            case "\\", "|", "<", ">", "*", "_", "`", "[", "]", "#":
                out.append("\\")
                out.append(character)
            default:
                out.append(character)
            }
        }
        return out
    }

    // MARK: HTML

    /// A colour per status for charts (nil: no status).
    public static func colour(_ status: ProgrammeStatus?) -> String {
        switch status {
        case .completed: "#2e7d32"
        case .ongoing: "#1565c0"
        case .onTrack: "#7cb342"
        case .delayed: "#f9a825"
        case .notStarted: "#e64a19"
        case .inConsultation: "#8e24aa"
        case .notApplicable: "#757575"
        case nil: "#d0d0d0"
        }
    }

    static let css = """
        body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1a1a1a;line-height:1.4}
        h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:2px solid #154273;color:#154273}h3{margin-bottom:.3rem}
        .intro,.theme{color:#555}
        table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
        th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
        th{background:#eef2f7}td.num{text-align:right;white-space:nowrap}td.status{white-space:nowrap}
        .explanation{color:#333;font-size:.92em;margin:.2rem 0 .6rem 1rem}
        .chart{margin:.5rem 0 1.5rem}.chart svg{display:block;width:100%;height:1.4rem;border:1px solid #bbb}
        .legend{list-style:none;padding:0;margin:.3rem 0;display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.9em}
        .swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em;border:1px solid #0003}
        """

    /// One self-contained HTML page: inline CSS and SVG, no external resources, all text escaped.
    public static func html(_ report: ProgrammeReport, options: ReportOptions = ReportOptions()) -> String {
        let w = ReportWords.of(options.language)
        let lang = options.language
        var out: [String] = [
            "<!DOCTYPE html>",
            "<html lang=\"\(lang.rawValue)\">",
            "<head>",
            "<meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<title>\(h(w.title))</title>",
            "<style>\n\(css)\n</style>",
            "</head>",
            "<body>",
            // One main landmark: screen readers jump to it, and axe-core asks for it (WCAG 2.1 AA).
            "<main>",
            "<h1>\(h(w.title))</h1>",
        ]
        var intro = w.summary(report.actionLines.filter { !$0.isUnplaced }.count, report.resultCount, report.activityCount)
        if let date = options.date { intro = "\(w.generated) \(date) · " + intro }
        out.append("<p class=\"intro\">\(h(intro))</p>")

        out.append("<h2>\(h(w.overallTitle))</h2>")
        out.append(chart(report.counts, label: w.total, words: w, language: lang))

        for line in report.actionLines {
            out.append("<section>")
            out.append("<h2>\(h(w.heading(line)))</h2>")
            out.append(chart(line.counts, label: w.heading(line), words: w, language: lang))
            for result in line.results {
                out.append("<h3>\(h(w.heading(result)))</h3>")
                if let theme = result.theme, !theme.isEmpty {
                    out.append("<p class=\"theme\">\(h(w.theme)): <em>\(h(theme))</em></p>")
                }
                guard !result.activities.isEmpty else {
                    out.append("<p><em>\(h(w.noActivities))</em></p>")
                    continue
                }
                out.append("<table>")
                out.append("<thead><tr><th>\(h(w.number))</th><th>\(h(w.activity))</th><th>\(h(w.status))</th><th>\(h(w.owner))</th><th>\(h(w.partners))</th></tr></thead>")
                out.append("<tbody>")
                for a in result.activities {
                    var row = "<tr><td class=\"num\">\(h(a.number.map(String.init) ?? ""))</td><td>\(h(a.title))"
                    if options.details, let text = a.explanation, !text.isEmpty {
                        row += "<div class=\"explanation\">\(h(text))</div>"
                    }
                    row += "</td><td class=\"status\"><span class=\"swatch\" style=\"background:\(colour(a.status))\"></span>"
                    row += "\(h(w.symbol(a.status))) \(h(w.label(a.status, lang)))</td>"
                    row += "<td>\(h(a.owner ?? "—"))</td><td>\(h(a.partners.isEmpty ? "—" : a.partners.joined(separator: ", ")))</td></tr>"
                    out.append(row)
                }
                out.append("</tbody>")
                out.append("</table>")
            }
            out.append("</section>")
        }

        out.append("<h2>\(h(w.countsTitle))</h2>")
        out.append("<table>")
        let lines = report.actionLines
        out.append("<thead><tr><th>\(h(w.status))</th>" + lines.map { "<th>\(h(w.shortName($0)))</th>" }.joined() + "<th>\(h(w.total))</th></tr></thead>")
        out.append("<tbody>")
        let perLine = lines.map(\.counts)
        let overall = report.counts
        for status in StatusCounts.order {
            var row = "<tr><td class=\"status\"><span class=\"swatch\" style=\"background:\(colour(status))\"></span>\(h(w.symbol(status))) \(h(w.label(status, lang)))</td>"
            row += perLine.map { "<td class=\"num\">\($0[status])</td>" }.joined()
            row += "<td class=\"num\">\(overall[status])</td></tr>"
            out.append(row)
        }
        out.append("<tr><th>\(h(w.total))</th>" + perLine.map { "<th class=\"num\">\($0.total)</th>" }.joined() + "<th class=\"num\">\(overall.total)</th></tr>")
        out.append("</tbody>")
        out.append("</table>")

        out.append("<h2>\(h(w.legend))</h2>")
        out.append("<table>")
        out.append("<thead><tr><th>\(h(w.symbol))</th><th>\(h(w.code))</th><th>\(h(w.meaning))</th></tr></thead>")
        out.append("<tbody>")
        for status in StatusCounts.order {
            out.append("<tr><td><span class=\"swatch\" style=\"background:\(colour(status))\"></span>\(h(w.symbol(status)))</td><td><code>\(h(status?.rawValue ?? ""))</code></td><td>\(h(w.label(status, lang)))</td></tr>")
        }
        out.append("</tbody>")
        out.append("</table>")
        out.append("</main>")
        out.append("</body>")
        out.append("</html>")
        return out.joined(separator: "\n") + "\n"
    }

    /// A horizontal stacked bar (inline SVG) of `counts`, with a legend of the non-zero parts.
    static func chart(_ counts: StatusCounts, label: String, words w: ReportWords, language: ReportLanguage) -> String {
        let total = counts.total
        let width = 1000.0
        var parts: [String] = []
        var legend: [String] = []
        var x = 0.0
        var description: [String] = []
        for status in StatusCounts.order {
            let n = counts[status]
            guard n > 0 else { continue }
            let segment = width * Double(n) / Double(total)
            let text = "\(w.label(status, language)): \(n)"
            parts.append("<rect x=\"\(fmt(x))\" y=\"0\" width=\"\(fmt(segment))\" height=\"20\" fill=\"\(colour(status))\"><title>\(h(text))</title></rect>")
            legend.append("<li><span class=\"swatch\" style=\"background:\(colour(status))\"></span>\(h(w.symbol(status))) \(h(text))</li>")
            description.append(text)
            x += segment
        }
        if total == 0 {
            parts.append("<rect x=\"0\" y=\"0\" width=\"1000\" height=\"20\" fill=\"#f0f0f0\"><title>\(h(w.noActivities))</title></rect>")
            legend.append("<li>\(h(w.noActivities))</li>")
            description.append(w.noActivities)
        }
        let aria = label + " — " + description.joined(separator: ", ")
        return """
            <figure class="chart">
            <svg viewBox="0 0 1000 20" preserveAspectRatio="none" role="img" aria-label="\(h(aria))">
            \(parts.joined(separator: "\n"))
            </svg>
            <ul class="legend">\(legend.joined())</ul>
            </figure>
            """
    }

    static func fmt(_ value: Double) -> String {
        let rounded = (value * 100).rounded() / 100
        if rounded == rounded.rounded() { return String(Int(rounded)) }
        return String(rounded)
    }

    /// Text escaped for HTML content and attribute values.
    public static func h(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
