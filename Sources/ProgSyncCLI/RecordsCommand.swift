import ArgumentParser
import ProgSyncCore

struct RecordsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "records",
        abstract: "List, show, change, delete records and show their history.",
        discussion: """
            Examples:
              progsync records list --kind activity --status delayed
              progsync records show al1.r01.a01
              progsync records set al1.r01.a01 status=completed owner=politie
            """,
        subcommands: [List.self, Show.self, SetFields.self, Delete.self, History.self]
    )
}

/// Checks a record id argument.
func validateRecordID(_ id: String) throws {
    guard ProgrammeSchema.isValidRecordID(id) else {
        throw ValidationError("'\(id)' is not a record id (1–128 of A–Z a–z 0–9 . _ : -), e.g. al1.r04.a02")
    }
}

func recordPath(_ id: String) -> String { "/v1/records/" + URLQuery.segment(id) }

extension RecordsCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List records as a table (ID, KIND, STATUS, OWNER, TITLE).",
            discussion: """
                Shows 100 records unless --limit or --all says otherwise. "!" before a title marks \
                a record with conflicting values.

                Examples:
                  progsync records list --kind activity --owner politie
                  progsync records list --status "Nog niet in uitvoering" --all
                  progsync records list --action-line al2 --json
                  progsync records list --kind activity --as-of 2022-12-31
                """
        )

        @OptionGroup var options: GlobalOptions
        @OptionGroup(title: "Filters") var filters: RecordFilterOptions
        @OptionGroup var asOf: AsOfOption

        @Option(help: "Show at most this many records (1–1000; default 100).")
        var limit: Int?

        @Option(help: "Skip this many records first.")
        var offset: Int?

        @Flag(help: "Show every matching record, fetching page after page.")
        var all = false

        func validate() throws {
            if let limit, !(1...1000).contains(limit) { throw ValidationError("--limit must be from 1 to 1000") }
            if let offset, offset < 0 { throw ValidationError("--offset must not be negative") }
            if all, limit != nil || offset != nil { throw ValidationError("--all cannot be combined with --limit or --offset") }
        }

        func run() async throws {
            let api = try options.api()
            if all {
                let records = try await api.allRecords(query: filters.queryItems + asOf.queryItems)
                if options.json {
                    let answer: JSONValue = .object([
                        "records": .array(records), "total": .int(Int64(records.count)),
                        "offset": 0, "limit": .int(Int64(records.count)),
                    ])
                    Console.outLine(answer.prettyString())
                } else {
                    Console.out(records.isEmpty ? "no records\n" : HumanFormat.recordTable(records, width: Console.terminalWidth))
                }
                return
            }
            var query = filters.queryItems + asOf.queryItems
            if let limit { query.append(("limit", String(limit))) }
            if let offset { query.append(("offset", String(offset))) }
            let page = try await api.get("/v1/records", query: query)
            if options.json {
                Console.outLine(page.prettyString())
                return
            }
            let records = page["records"]?.arrayValue ?? []
            let total = page["total"]?.intValue.map(Int.init) ?? records.count
            let first = page["offset"]?.intValue.map(Int.init) ?? offset ?? 0
            if records.isEmpty {
                Console.out(total > 0 ? "no records at offset \(first) (\(total) in all)\n" : "no records\n")
                return
            }
            var text = HumanFormat.recordTable(records, width: Console.terminalWidth)
            if total > records.count {
                text += "showing \(first + 1)–\(first + records.count) of \(total); use --all, or --offset \(first + records.count) for the next page\n"
            }
            Console.out(text)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Show every field of a record with who set it and when.",
            discussion: """
                A "!" before a field marks conflicting values (see progsync conflicts list).

                Example:
                  progsync records show al1.r01.a01
                  progsync records show al1.r01.a01 --as-of 2022-12-31
                """
        )

        @OptionGroup var options: GlobalOptions
        @OptionGroup var asOf: AsOfOption

        @Argument(help: "The record id, e.g. al1.r01.a01.")
        var id: String

        func validate() throws { try validateRecordID(id) }

        func run() async throws {
            let record = try await options.api().get(recordPath(id), query: asOf.queryItems)
            Console.out(options.json ? record.prettyString() + "\n" : HumanFormat.recordDetail(record, width: Console.terminalWidth))
        }
    }

    struct SetFields: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Change fields of a record (or create it).",
            discussion: """
                Each change is field=value:
                  status=…      a code, Dutch or English label, or symbol (stored as the code)
                  number=3      a whole number
                  partners=a,b  a comma-separated list (also links=…)
                  deleted=true  true or false
                  field=        or field=null clears the field
                  field:=JSON   takes a raw JSON value, e.g. links:='["https://example.org"]'
                A record that does not exist yet is created when kind=… is among the changes \
                (or with --create); creating needs the kind's required fields: action-line \
                number,title; result actionLine,number,title; activity result,number,title; \
                project actionLine,number,title.

                Restructuring the programme (coordinator): closed=DATE archives an action line or \
                result (closed= reopens it); result=… moves an activity; title=… rewords. The \
                history keeps every earlier value, and `report --as-of` shows the programme as it \
                stood on a date.

                Examples:
                  progsync records set al1.r01.a01 status="In uitvoering maar met vertraging"
                  progsync records set al1.r01.a01 owner=politie partners=om,comensha
                  progsync records set al1.r01.a01 due=2025-06-30 explanation=
                  progsync records set al1.r01.a09 kind=activity result=al1.r01 \\
                      number=9 title="Nieuwe training"
                  progsync records set al1.r01 closed=2023-06-30
                  progsync records set al1.r01.a02 result=al1.r02
                """
        )

        @OptionGroup var options: GlobalOptions

        @Argument(help: "The record id, e.g. al1.r01.a01.")
        var id: String

        @Argument(help: ArgumentHelp("The changes, each field=value.", valueName: "field=value"))
        var changes: [String] = []

        @Flag(help: "Create the record if it does not exist (uses PUT, which creates or updates).")
        var create = false

        func validate() throws {
            try validateRecordID(id)
            guard !changes.isEmpty else {
                throw ValidationError("give at least one change, e.g. status=completed")
            }
            _ = try body()
        }

        /// The request body: the changes as one flat object.
        func body() throws -> [String: JSONValue] {
            var fields: [String: JSONValue] = [:]
            for change in changes {
                do {
                    let (field, value) = try FieldInput.parseAssignment(change)
                    guard fields.updateValue(value, forKey: field) == nil else {
                        throw ValidationError("\(field) is given twice")
                    }
                } catch let error as FieldInputError {
                    throw ValidationError(error.message)
                }
            }
            return fields
        }

        func run() async throws {
            let api = try options.api()
            let fields = try body()
            let result: JSONValue
            var verb = "updated"
            if create {
                result = try await api.send("PUT", recordPath(id), body: .object(fields))
                verb = "saved"
            } else {
                do {
                    result = try await api.send("PATCH", recordPath(id), body: .object(fields))
                } catch let error as CLIError where error.kind == .daemon && error.status == 404 {
                    guard fields["kind"] != nil else {
                        throw CLIError(
                            .daemon, "record \(id) does not exist",
                            hint: "to create it, give kind=… and the kind's required fields (see progsync records set --help)",
                            status: 404, code: error.code
                        )
                    }
                    result = try await api.send("PUT", recordPath(id), body: .object(fields))
                    verb = "created"
                }
            }
            Console.out(options.json ? result.prettyString() + "\n" : HumanFormat.writeResult(result, verb: verb))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete",
            abstract: "Mark a record deleted (it stays in the history; set deleted=false to undo).",
            discussion: """
                Example:
                  progsync records delete al1.r01.a09
                """
        )

        @OptionGroup var options: GlobalOptions

        @Argument(help: "The record id.")
        var id: String

        func validate() throws { try validateRecordID(id) }

        func run() async throws {
            let result = try await options.api().send("DELETE", recordPath(id))
            Console.out(options.json ? result.prettyString() + "\n" : HumanFormat.writeResult(result, verb: "deleted"))
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "history",
            abstract: "Show every change to a record: time, organisation, author and values.",
            discussion: """
                Example:
                  progsync records history al1.r01.a01
                """
        )

        @OptionGroup var options: GlobalOptions

        @Argument(help: "The record id.")
        var id: String

        func validate() throws { try validateRecordID(id) }

        func run() async throws {
            let history = try await options.api().get(recordPath(id) + "/history")
            Console.out(options.json ? history.prettyString() + "\n" : HumanFormat.history(history, width: Console.terminalWidth))
        }
    }
}
