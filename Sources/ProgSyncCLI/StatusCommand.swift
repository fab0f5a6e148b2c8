import ArgumentParser
import ProgSyncCore
import ProgSyncHTTPClient

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the node: identity, clock, record counts, conflicts, quarantine, digest and peers.",
        discussion: """
            With --check it prints one line per problem (or one OK line) and exits like a Nagios \
            plugin: 0 OK, 1 WARNING (a partner not up, commits in quarantine, the last \
            reconciliation not in agreement), 2 CRITICAL (daemon unreachable, not live or not ready).

            Example:
              progsync status
              progsync status --json | jq .digest
              progsync status --check
            """
    )

    @OptionGroup var options: GlobalOptions

    @Flag(name: .long, help: "Check the node's health: one line per problem, Nagios exit codes (0, 1, 2).")
    var check = false

    func run() async throws {
        if check { return try await runCheck() }
        let status = try await options.api().get("/v1/status")
        if options.json {
            Console.outLine(status.prettyString())
        } else {
            Console.out(HumanFormat.status(status, width: Console.terminalWidth))
        }
    }
}

extension StatusCommand {
    func runCheck() async throws {
        let problems: [HealthCheck.Problem], status: JSONValue
        do {
            let api = try options.api()
            let live = try await api.raw("GET", "/v1/health"), ready = try await api.raw("GET", "/v1/health/ready")
            status = try await api.get("/v1/status")
            let latest = try? await api.get("/v1/reconcile/reports/latest")
            problems = HealthCheck.problems(live: Self.json(live.body), ready: Self.json(ready.body), status: status, latestReconciliation: latest)
        } catch let error as CLIError {
            problems = [HealthCheck.Problem(.critical, error.message)]
            status = .null
        }
        let (lines, code) = HealthCheck.summary(problems, status: status)
        for line in lines { Console.outLine(line) }
        if code != 0 { throw ExitCode(code) }
    }

    static func json(_ body: [UInt8]) -> JSONValue { (try? JSONParser.parse(body, maxDepth: 32)) ?? .null }
}

struct DigestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "digest",
        abstract: "Print the replica digest (equal digests mean equal replicas).",
        discussion: """
            Prints the root hash; with --json the whole object (root, 64 inner hashes, field count).

            Example:
              progsync digest
            """
    )

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let digest = try await options.api().get("/v1/digest")
        if options.json {
            Console.outLine(digest.prettyString())
        } else {
            Console.outLine(digest["root"]?.stringValue ?? digest.canonicalString)
        }
    }
}
