import ArgumentParser
import ProgSyncCore
import ProgSyncReport

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Show the audit log (refusals and operator actions) or verify its hash chain.",
        discussion: """
            progsyncd keeps <data>/audit.jsonl: refused writes, refused or held commits, refused \
            TLS connections, quarantine releases, conflict resolutions, bundle imports, repairs \
            and membership changes, each line chained to the one before by its SHA-256.

            Examples:
              progsync audit show --since 2026-11-20
              progsync audit show --json
              progsync audit verify
            """,
        subcommands: [Show.self, Verify.self],
        defaultSubcommand: Show.self
    )
}

extension AuditCommand {
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "List audit events, oldest first.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "Only events at or after this UTC time (2026-11-20 or 2026-11-20T08:00:00Z).")
        var since: String?

        @Option(help: "At most this many events (1–10000).")
        var limit: Int = 1000

        func validate() throws {
            guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 10000") }
        }

        func run() async throws {
            var query = [("limit", String(limit))]
            if let since { query.append(("since", since)) }
            let answer = try await options.api().get("/v1/audit", query: query)
            if options.json { return Console.outLine(answer.prettyString()) }
            let events = answer["events"]?.arrayValue ?? []
            guard !events.isEmpty else { return Console.outLine("no audit events\(since.map { " since \($0)" } ?? "")") }
            var table = TextTable(headers: ["SEQ", "TIME", "ACTION", "OBJECT", "RESULT", "REASON", "ORIGIN", "ACTOR", "DETAIL"])
            for e in events {
                var detail = e["detail"]?.stringValue ?? ""
                if let n = e["repeated"]?.intValue { detail = "(+\(n) alike before) " + detail }
                table.append([String(e["seq"]?.intValue ?? 0), HumanFormat.shortTime(e["time"]?.stringValue), e["action"]?.stringValue ?? "",
                              e["object"]?.stringValue ?? "", e["result"]?.stringValue ?? "", e["reason"]?.stringValue ?? "",
                              e["origin"]?.stringValue ?? "", e["actor"]?.stringValue ?? "", detail])
            }
            Console.out(table.render(maxWidth: Console.terminalWidth))
            if answer["more"]?.boolValue == true {
                Console.errLine("more events follow; narrow with --since or raise --limit")
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check the audit log's hash chain and head (exit 1 with the line numbers of edited or removed lines).")

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let answer = try await options.api().get("/v1/audit/verify")
            if options.json {
                Console.outLine(answer.prettyString())
            } else {
                for p in answer["problems"]?.arrayValue ?? [] {
                    Console.outLine("line \(p["line"]?.intValue ?? 0): \(p["message"]?.stringValue ?? "")")
                }
                let lines = answer["lines"]?.intValue ?? 0
                var headText = "no head file"
                if let head = answer["head"], let seq = head["seq"]?.intValue {
                    headText = "head seq \(seq) sha256 \(head["hash"]?.stringValue ?? "")"
                }
                Console.outLine((answer["ok"]?.boolValue == true ? "audit log intact: " : "audit log BROKEN: ") + "\(lines) lines, \(headText)")
            }
            guard answer["ok"]?.boolValue == true else { throw ExitCode(1) }
        }
    }
}
