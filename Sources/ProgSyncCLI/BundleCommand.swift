import ArgumentParser
import ProgSyncCore
import ProgSyncHTTPClient

struct BundleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bundle",
        abstract: "Carry commits between nodes by hand, as a file, when there is no network.",
        discussion: """
            A bundle is compressed, names the node that wrote it and ends with a checksum and \
            that node's signature; a damaged or altered bundle is refused whole. Importing \
            verifies every commit exactly as if it came over the network, and trusts what the \
            bundle says its writer holds only when the signature matches the registry.

            Examples:
              progsync bundle export --peer politie -o naar-politie.psb
              progsync bundle export --since 2026-11-20 -o sinds-vrijdag.psb
              progsync bundle import van-laptop.psb
            """,
        subcommands: [Export.self, Import.self]
    )
}

extension BundleCommand {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export",
            abstract: "Write the commits a partner lacks (or all since a time) to a bundle file.",
            discussion: """
                --peer goes by the version vector that partner last told this node (over the \
                network or in a bundle it sent); a partner never heard from gets everything.
                """
        )

        @OptionGroup var options: GlobalOptions

        @Option(help: "The partner node (registry name, node id, or org code) to write the missing commits for.")
        var peer: String?

        @Option(help: "Every commit stamped at or after this time: a UTC date (2026-11-20), time (2026-11-20T08:00:00Z) or a 16-hex-digit stamp.")
        var since: String?

        @Flag(help: "Every commit this node holds.")
        var all = false

        @Option(name: .shortAndLong, help: "The bundle file to write.")
        var output: String

        func validate() throws {
            guard [peer != nil, since != nil, all].filter({ $0 }).count == 1 else {
                throw ValidationError("give exactly one of --peer NAME, --since STAMP or --all")
            }
            guard output != "-" else { throw ValidationError("--output must be a file: a bundle is binary") }
        }

        func run() async throws {
            var query: [(String, String)] = []
            if let peer { query.append(("peer", peer)) }
            if let since { query.append(("since", since)) }
            if all { query.append(("all", "true")) }
            let response = try await options.api().raw("GET", "/v1/bundle", query: query, timeout: .seconds(600))
            guard response.status == 200 else {
                throw LocalAPIClient.daemonError(status: response.status, body: try? JSONParser.parse(response.body, maxDepth: 8), rawBody: response.body)
            }
            let bundle: CommitBundle
            do { bundle = try CommitBundle(decoding: response.body) } catch {
                throw CLIError.failure("the daemon sent a bundle that does not verify: \(error)")
            }
            try Files.write(response.body, to: output)
            let count = bundle.commits.count
            if options.json {
                Console.outLine(JSONValue.object(["file": .string(output), "bytes": .int(Int64(response.body.count)),
                                                  "commits": .int(Int64(count)), "header": bundle.header]).prettyString())
            } else {
                Console.outLine("wrote \(output): \(count) commit\(count == 1 ? "" : "s"), \(response.body.count) bytes")
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Apply a bundle file: verified and merged exactly like commits from the network."
        )

        @OptionGroup var options: GlobalOptions

        @Argument(help: "The bundle file to read.")
        var file: String

        func run() async throws {
            let bytes = try Files.read(file)
            // Check locally first: a damaged file gets a message before anything is sent.
            do { _ = try CommitBundle(decoding: bytes) } catch {
                throw CLIError.failure("\(file): \(error); nothing was imported")
            }
            let answer = try await options.api().send(bytes: bytes, "POST", "/v1/bundle", timeout: .seconds(600))
            if options.json {
                Console.outLine(answer.prettyString())
                return
            }
            let held = answer["held"]?.arrayValue ?? []
            let rejected = answer["rejected"]?.arrayValue ?? []
            var from = answer["from"]?.stringValue ?? "?"
            if let name = answer["name"]?.stringValue, !name.isEmpty { from = "\(name) (\(answer["org"]?.stringValue ?? "?"))" }
            Console.outLine("""
                bundle from \(from), written \(HumanFormat.shortTime(answer["created"]?.stringValue))
                  \(answer["commits"]?.intValue ?? 0) commits: \(answer["new"]?.intValue ?? 0) new, \(answer["alreadyKnown"]?.intValue ?? 0) already known, \
                \(held.count) held, \(rejected.count) rejected
                """)
            for h in held { Console.outLine("  held \(h["commit"]?.stringValue ?? "?"): \(h["reason"]?.stringValue ?? "") \(h["detail"]?.stringValue ?? "")") }
            for r in rejected { Console.outLine("  rejected \(r["commit"]?.stringValue ?? "?"): \(r["reason"]?.stringValue ?? "") \(r["detail"]?.stringValue ?? "")") }
            if answer["headerVerified"] == false {
                Console.outLine("  header not verified (\(answer["headerNote"]?.stringValue ?? "no signature")): what it says the writer holds was not recorded")
            }
            Console.outLine("digest \(answer["digest"]?.stringValue ?? "?")")
        }
    }
}
