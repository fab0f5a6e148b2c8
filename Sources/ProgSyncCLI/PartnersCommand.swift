import ArgumentParser
import Foundation
import ProgSyncCore

struct PartnersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "partners",
        abstract: "The partnership: organisations and their nodes, admitted and retired by a coordinator.",
        discussion: """
            The partnership is replicated data: a coordinator organisation's node admits, removes and
            revokes nodes with signed commits, and every node follows. The nodes of the registry a node
            was set up with (registry.json) are its trust root.

            Examples:
              progsync partners list
              progsync partners invite --org politie --name politie-utrecht -o politie.invite   # then, there:
                progsyncd init --data-dir /var/lib/progsync --invite politie.invite
              progsync partners add request.json          # a join request written by progsyncd init
              progsync partners remove politie-laptop-3   # its past commits stay valid
              progsync partners revoke politie-laptop-3 --after 41   # a stolen key: its commits after 41 are undone
              progsync partners log
            """,
        subcommands: [List.self, Show.self, Invite.self, Invites.self, Add.self, Remove.self, Revoke.self, Log.self],
        defaultSubcommand: List.self
    )
}

extension PartnersCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Every organisation and node, and whether it is active.")
        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let answer = try await options.api().get("/v1/partners")
            if options.json { return Console.outLine(answer.prettyString()) }
            var lines = ["org           node              name                    state     commits  admitted by"]
            for org in answer["orgs"]?.arrayValue ?? [] {
                let code = org["code"]?.stringValue ?? "?"
                let nodes = org["nodes"]?.arrayValue ?? []
                if nodes.isEmpty { lines.append("\(pad(code, 13)) (no nodes)") }
                for node in nodes {
                    var state = node["state"]?.stringValue ?? "?"
                    if let after = node["retiredAfter"]?.intValue { state += " after \(after)" }
                    let mark = node["self"]?.boolValue == true ? " (this node)" : ""
                    lines.append("\(pad(code + (org["coordinator"]?.boolValue == true ? "*" : ""), 13)) \(pad(node["id"]?.stringValue ?? "?", 17)) "
                        + "\(pad(node["name"]?.stringValue ?? "-", 23)) \(pad(state, 9)) \(pad(String(node["held"]?.intValue ?? 0), 8)) "
                        + "\(node["admittedBy"]?.stringValue ?? "?")\(mark)")
                }
            }
            lines.append("* coordinator organisation")
            Console.outLine(lines.joined(separator: "\n"))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "One node: key, certificate pin, address, state.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The node's id or name.") var node: String

        func run() async throws {
            let answer = try await options.api().get("/v1/partners/" + URLQuery.escape(node))
            if options.json { return Console.outLine(answer.prettyString()) }
            var lines: [String] = []
            for key in ["id", "name", "org", "state", "retiredAfter", "coordinator", "admittedBy", "held", "publicKey", "certificatePin", "address"] {
                guard let value = answer[key], value != .null else { continue }
                lines.append("\(pad(key + ":", 16)) \(value.stringValue ?? value.canonicalString)")
            }
            Console.outLine(lines.joined(separator: "\n"))
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add", abstract: "Admit a node from its join request (coordinators only).",
            discussion: "The request is the JSON file `progsyncd init --request FILE` writes on the new node.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The join request file (- for stdin).") var request: String

        func run() async throws {
            let bytes = try Files.read(request)
            let body: JSONValue
            do { body = try JSONParser.parse(bytes) } catch { throw CLIError.failure("\(request) is not a join request: \(error)") }
            let answer = try await options.api().send("POST", "/v1/partners", body: body)
            if options.json { return Console.outLine(answer.prettyString()) }
            let node = answer["node"] ?? .null
            Console.outLine("admitted \(node["id"]?.stringValue ?? "?") (\(node["name"]?.stringValue ?? "-"), org \(node["org"]?.stringValue ?? "?")) in commit \(answer["commit"]?.stringValue ?? "?")")
        }
    }

    struct Invite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "invite", abstract: "Make a single-use invite for a new node of an organisation (coordinators only).",
            discussion: """
                The invite holds the partnership's trust root, this node's key, certificate pin and address, \
                and a secret. Give it to the new node's operator over a channel you trust (whoever holds it \
                can join as that organisation until it is used or expires); there: progsyncd init --invite FILE.
                This node keeps only a hash of the secret.
                """)
        @OptionGroup var options: GlobalOptions
        @Option(help: "The organisation the new node belongs to, e.g. politie.") var org: String
        @Option(help: "A name for the new node.") var name: String?
        @Option(help: "The organisation's full name, for a new organisation.") var orgName: String?
        @Option(help: "How long the invite stays valid: 30m, 12h, 7d (at most 90 days).") var expires: String = "7d"
        @Option(help: "Where the new node reaches this node's peer listener (default: this node's address in the partnership).") var address: String?
        @Option(name: .shortAndLong, help: "Write the invite here (mode 0600).") var output: String

        func validate() throws {
            guard Self.seconds(expires) != nil else { throw ValidationError("--expires must be a number with s, m, h or d, e.g. 7d") }
        }

        static func seconds(_ text: String) -> Int64? {
            guard let unit = text.last, let n = Int64(text.dropLast()), n > 0 else { return nil }
            switch unit {
            case "s": return n
            case "m": return n * 60
            case "h": return n * 3600
            case "d": return n * 86_400
            default: return nil
            }
        }

        func run() async throws {
            var body: [String: JSONValue] = ["org": .string(org), "expiresInSeconds": .int(Self.seconds(expires)!)]
            if let name { body["name"] = .string(name) }
            if let orgName { body["orgName"] = .string(orgName) }
            if let address { body["address"] = .string(address) }
            let answer = try await options.api().send("POST", "/v1/partners/invites", body: .object(body))
            umask(0o077)
            try Files.write(Array((answer.prettyString() + "\n").utf8), to: output)
            if options.json { return Console.outLine(answer.prettyString()) }
            Console.outLine("""
                invite \(answer["id"]?.stringValue ?? "?") for \(org)\(name.map { " (\($0))" } ?? ""), valid until \(answer["expires"]?.stringValue ?? "?"): \(output)
                It admits one node. On the new node: progsyncd init --data-dir DIR --invite \(output)
                """)
        }
    }

    struct Invites: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "invites", abstract: "The invites this node issued: open, used or expired.")
        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let answer = try await options.api().get("/v1/partners/invites")
            if options.json { return Console.outLine(answer.prettyString()) }
            let invites = answer["invites"]?.arrayValue ?? []
            guard !invites.isEmpty else { return Console.outLine("no invites issued by this node") }
            var lines = ["invite                            org           state    expires               used by"]
            for invite in invites {
                lines.append("\(pad(invite["id"]?.stringValue ?? "?", 33)) \(pad(invite["org"]?.stringValue ?? "?", 13)) "
                    + "\(pad(invite["state"]?.stringValue ?? "?", 8)) \(pad(invite["expires"]?.stringValue ?? "?", 21)) \(invite["usedBy"]?.stringValue ?? "-")")
            }
            Console.outLine(lines.joined(separator: "\n"))
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove", abstract: "Retire a node: its commits so far stay valid, later ones are refused everywhere (coordinators only).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The node's id or name.") var node: String

        func run() async throws {
            let answer = try await options.api().send("POST", "/v1/partners/\(URLQuery.escape(node))/remove")
            if options.json { return Console.outLine(answer.prettyString()) }
            Console.outLine(PartnersCommand.retired(answer))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke", abstract: "Retire a node after SEQ (a stolen key): its later commits are undone on every node.")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The node's id or name.") var node: String
        @Option(help: "The node's last commit that stays valid.") var after: Int64

        func validate() throws {
            guard after >= 0 else { throw ValidationError("--after must be a commit number ≥ 0") }
        }

        func run() async throws {
            let answer = try await options.api().send("POST", "/v1/partners/\(URLQuery.escape(node))/revoke", body: .object(["after": .int(after)]))
            if options.json { return Console.outLine(answer.prettyString()) }
            Console.outLine(PartnersCommand.retired(answer))
        }
    }

    struct Log: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log", abstract: "Every change of the partnership: which coordinator node, who, when.")
        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let answer = try await options.api().get("/v1/partners/log")
            if options.json { return Console.outLine(answer.prettyString()) }
            var lines: [String] = []
            for entry in answer["log"]?.arrayValue ?? [] {
                let changes = (entry["changes"]?.arrayValue ?? []).map {
                    "\($0["record"]?.stringValue ?? "?").\($0["field"]?.stringValue ?? "?")=\(($0["value"] ?? .null).canonicalString.prefix(60))"
                }
                lines.append("\(entry["time"]?.stringValue ?? "?")  \(entry["commit"]?.stringValue ?? "?") (\(entry["org"]?.stringValue ?? "?"), \(entry["author"]?.stringValue ?? "?"))")
                lines += changes.map { "    " + $0 }
            }
            Console.outLine(lines.isEmpty ? "no membership changes yet: the partnership is the trust root (registry.json)" : lines.joined(separator: "\n"))
        }
    }

    static func retired(_ answer: JSONValue) -> String {
        let node = answer["node"] ?? .null
        let withheld = answer["withheld"]?.arrayValue ?? []
        var lines = ["retired \(node["id"]?.stringValue ?? "?") (\(node["name"]?.stringValue ?? "-")) after its commit \(node["retiredAfter"]?.intValue ?? 0) in commit \(answer["commit"]?.stringValue ?? "?")"]
        if withheld.isEmpty {
            lines.append("nothing it signed was undone here")
        } else {
            lines.append("undone here (re-enter what should stay): \(withheld.count) commits")
            lines += withheld.prefix(20).map { "    \($0["commit"]?.stringValue ?? "?")" }
        }
        return lines.joined(separator: "\n")
    }
}

private func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
