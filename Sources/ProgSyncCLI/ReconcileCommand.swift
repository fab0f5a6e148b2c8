import ArgumentParser
import ProgSyncCore
import ProgSyncReport

struct ReconcileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile",
        abstract: "Reconcile with the partners now, or show the reports of earlier runs.",
        discussion: """
            A run checks this replica against its own commit log, exchanges the missing commits \
            with each partner, compares digests, narrows down and repairs any difference, and \
            writes a report. progsyncd runs it every night at reconcile.schedule.

            Examples:
              progsync reconcile
              progsync reconcile run --peer politie
              progsync reconcile show latest
              progsync reconcile list
            """,
        subcommands: [Run.self, Show.self, List.self],
        defaultSubcommand: Run.self
    )
}

extension ReconcileCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run", abstract: "Reconcile now and print the report (exit 1 when the replicas do not agree).")

        @OptionGroup var options: GlobalOptions

        @Option(help: "Only this partner (registry name, node id or org code).")
        var peer: String?

        func run() async throws {
            var query: [(String, String)] = []
            if let peer { query.append(("peer", peer)) }
            Console.errLine("reconciling\(peer.map { " with \($0)" } ?? " with every partner")…")
            let report = try await options.api().send("POST", "/v1/reconcile", query: query, timeout: .seconds(3600))
            Console.out(options.json ? report.prettyString() + "\n" : ReconcileCommand.render(report))
            guard report["verdict"]?.stringValue == "in agreement" else { throw ExitCode(1) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one report: latest (default) or an id from reconcile list.")

        @OptionGroup var options: GlobalOptions

        @Argument(help: "latest, or a report id.")
        var id: String = "latest"

        func run() async throws {
            let report = try await options.api().get("/v1/reconcile/reports/" + URLQuery.segment(id))
            Console.out(options.json ? report.prettyString() + "\n" : ReconcileCommand.render(report))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the kept reports, newest first.")

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let answer = try await options.api().get("/v1/reconcile/reports")
            if options.json { return Console.outLine(answer.prettyString()) }
            let items = answer["reports"]?.arrayValue ?? []
            guard !items.isEmpty else { return Console.outLine("no reconciliation has run yet") }
            var table = TextTable(headers: ["ID", "STARTED", "TRIGGER", "PEERS", "VERDICT"])
            for r in items {
                table.append([r["id"]?.stringValue ?? "", HumanFormat.shortTime(r["started"]?.stringValue), r["trigger"]?.stringValue ?? "",
                              String(r["peers"]?.intValue ?? 0), r["verdict"]?.stringValue ?? ""])
            }
            Console.out(table.render(maxWidth: Console.terminalWidth))
        }
    }

    static func render(_ r: JSONValue) -> String {
        func n(_ v: JSONValue?) -> Int64 { v?.intValue ?? 0 }
        var lines: [String] = []
        lines.append("reconciliation \(r["id"]?.stringValue ?? "") (\(r["trigger"]?.stringValue ?? "?")), "
                     + "started \(HumanFormat.shortTime(r["started"]?.stringValue)), took \(r["durationMs"]?.intValue ?? 0) ms")
        let s = r["selfCheck"]
        var selfLine = "self-check: \(n(s?["fieldsChecked"])) fields checked"
        if n(s?["missingCommits"]) > 0 { selfLine += ", \(n(s?["missingCommits"])) commits missing from the log (\(n(s?["commitsRestored"])) restored)" }
        if n(s?["divergedBuckets"]) > 0 {
            selfLine += ", \(n(s?["divergedBuckets"])) digest buckets differed: \(n(s?["fieldsRepaired"])) fields and "
                + "\(n(s?["conflictsRepaired"])) conflicts repaired from the commit log"
            let examples = s?["repairedExamples"]?.arrayValue?.compactMap(\.stringValue) ?? []
            if !examples.isEmpty { selfLine += " (e.g. \(examples.prefix(3).joined(separator: ", ")))" }
        }
        lines.append(selfLine)
        var table = TextTable(headers: ["PEER", "FETCHED", "SENT", "HELD", "REJECTED", "VECTORS", "DIGESTS", "VERDICT"])
        for p in r["peers"]?.arrayValue ?? [] {
            func same(_ v: JSONValue?) -> String { v?.boolValue.map { $0 ? "equal" : "differ" } ?? "-" }
            table.append([p["name"]?.stringValue ?? "?", String(n(p["fetched"])), String(n(p["sent"])), String(n(p["held"])),
                          String(n(p["rejected"])), same(p["vectorsEqual"]), same(p["digestsEqual"]), p["verdict"]?.stringValue ?? "?"])
        }
        if !(r["peers"]?.arrayValue ?? []).isEmpty { lines.append(table.render()) }
        for p in r["peers"]?.arrayValue ?? [] {
            if let nw = p["narrowing"] {
                lines.append("\(p["name"]?.stringValue ?? "?"): narrowed to \(n(nw["bucketsDiffering"])) buckets, \(n(nw["entriesDiffering"])) fields; "
                             + "repaired \(n(nw["fieldsRepaired"])), still differing \(n(nw["fieldsStillDiffering"]))")
            }
        }
        lines.append("held \(n(r["held"])), rejected \(n(r["rejected"])), open conflicts \(n(r["openConflicts"]))")
        lines.append("verdict: \(r["verdict"]?.stringValue ?? "?")")
        for reason in r["reasons"]?.arrayValue ?? [] { lines.append("  - \(reason.stringValue ?? "")") }
        return lines.joined(separator: "\n") + "\n"
    }
}
