import ArgumentParser
import ProgSyncCore

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the node: identity, clock, record counts, conflicts, quarantine, digest and peers.",
        discussion: """
            Example:
              progsync status
              progsync status --json | jq .digest
            """
    )

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let status = try await options.api().get("/v1/status")
        if options.json {
            Console.outLine(status.prettyString())
        } else {
            Console.out(HumanFormat.status(status, width: Console.terminalWidth))
        }
    }
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
