import ArgumentParser
import ProgSyncCore

struct ConflictsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conflicts",
        abstract: "List fields with competing values and resolve them.",
        discussion: """
            Examples:
              progsync conflicts list
              progsync conflicts resolve al1.r01.a01~status --pick 1
            """,
        subcommands: [List.self, Resolve.self]
    )
}

extension ConflictsCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List every conflict with its competing values, numbered from 0 (* = current winner).",
            discussion: """
                Example:
                  progsync conflicts list
                """
        )

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let conflicts = try await options.api().get("/v1/conflicts")
            Console.out(options.json ? conflicts.prettyString() + "\n" : HumanFormat.conflicts(conflicts))
        }
    }

    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resolve",
            abstract: "Settle a conflict by picking one of the competing values or giving a new one.",
            discussion: """
                ID is RECORD~FIELD as conflicts list shows it. --value is read like a value of \
                records set for that field (status labels become codes, an empty value clears).

                Examples:
                  progsync conflicts resolve al1.r01.a01~status --pick 1
                  progsync conflicts resolve al1.r01.a01~status --value "Voltooid"
                """
        )

        @OptionGroup var options: GlobalOptions

        @Argument(help: "The conflict id, RECORD~FIELD (e.g. al1.r01.a01~status).")
        var id: String

        @Option(help: "Keep competing value number N (0 is the current winner).")
        var pick: Int?

        @Option(help: "Set this value instead.")
        var value: String?

        /// The record id and the field of the conflict id.
        var parts: (record: String, field: String)? {
            guard let tilde = id.lastIndex(of: "~") else { return nil }
            let record = String(id[..<tilde])
            let field = String(id[id.index(after: tilde)...])
            guard ProgrammeSchema.isValidRecordID(record), !field.isEmpty else { return nil }
            return (record, field)
        }

        func validate() throws {
            guard parts != nil else {
                throw ValidationError("'\(id)' is not a conflict id; it looks like RECORD~FIELD, e.g. al1.r01.a01~status")
            }
            switch (pick, value) {
            case (nil, nil): throw ValidationError("say which value wins: --pick N or --value V")
            case (_?, _?): throw ValidationError("give either --pick or --value, not both")
            case (let n?, nil) where n < 0: throw ValidationError("--pick must be 0 or more")
            default: break
            }
            _ = try body()
        }

        func body() throws -> JSONValue {
            if let pick { return .object(["pick": .int(Int64(pick))]) }
            guard let value, let field = parts?.field else { return .object([:]) }
            guard ProgrammeSchema.fieldNames.contains(field) else { return .object(["value": .string(value)]) }
            do {
                return .object(["value": try FieldInput.parseValue(value, field: field)])
            } catch {
                throw ValidationError(error.message)
            }
        }

        func run() async throws {
            let result = try await options.api().send(
                "POST", "/v1/conflicts/" + URLQuery.segment(id) + "/resolve", body: try body()
            )
            Console.out(options.json ? result.prettyString() + "\n" : HumanFormat.writeResult(result, verb: "resolved", headline: "resolved conflict \(id)"))
        }
    }
}

struct QuarantineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quarantine",
        abstract: "List commits held back (clock ahead, unknown node, gap, missing dependency) and release them; and what a retired node signed after its retirement.",
        discussion: """
            Examples:
              progsync quarantine list
              progsync quarantine release 3fa2c1
            """,
        subcommands: [List.self, Release.self],
        defaultSubcommand: List.self
    )
}

extension QuarantineCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List the held commits with the reason each is held.",
            discussion: """
                Example:
                  progsync quarantine list
                """
        )

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let held = try await options.api().get("/v1/quarantine")
            Console.out(options.json ? held.prettyString() + "\n" : HumanFormat.quarantine(held, width: Console.terminalWidth))
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "release",
            abstract: "Apply a held commit now (a unique prefix of its hash is enough).",
            discussion: """
                Example:
                  progsync quarantine release 3fa2c1d0
                """
        )

        @OptionGroup var options: GlobalOptions

        @Argument(help: "The commit hash (64 hex digits) or a unique prefix of at least 4.")
        var hash: String

        func validate() throws {
            guard hash.count >= 4, hash.count <= 64, hash.allSatisfy(\.isHexDigit) else {
                throw ValidationError("'\(hash)' is not a commit hash (hex digits, at least 4)")
            }
        }

        func run() async throws {
            let api = try options.api()
            var full = hash.lowercased()
            if full.count < 64 {
                let held = try await api.get("/v1/quarantine")["held"]?.arrayValue ?? []
                let matches = held.compactMap { $0["hash"]?.stringValue }.filter { $0.lowercased().hasPrefix(full) }
                guard matches.count == 1 else {
                    throw CLIError.failure(
                        matches.isEmpty ? "no held commit has a hash starting with \(hash)"
                            : "\(matches.count) held commits have a hash starting with \(hash); give more digits"
                    )
                }
                full = matches[0]
            }
            let result = try await api.send("POST", "/v1/quarantine/" + URLQuery.segment(full) + "/release")
            if options.json {
                Console.outLine(result.prettyString())
            } else {
                Console.outLine(
                    "released \(full.prefix(16)): \(HumanFormat.int(result["applied"])) applied, "
                        + "\(HumanFormat.int(result["held"])) still held, \(HumanFormat.int(result["rejected"])) rejected"
                )
            }
        }
    }
}
