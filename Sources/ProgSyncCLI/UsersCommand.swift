import ArgumentParser
import Foundation
import Glibc
import ProgSyncCore
import ProgSyncReport

/// `progsync users …`: the web app's people, kept by the daemon (password hashes never leave it).
struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users",
        abstract: "Manage the people who may use the web app (viewers read, editors edit).",
        discussion: """
            Examples:
              progsync users add anna --role editor
              progsync users add anna --role editor --totp      # prints the authenticator link
              echo "$PASSWORD" | progsync users add bot --role viewer --password-stdin
              progsync users list
              progsync users disable anna
              progsync users reset-password anna
            """,
        subcommands: [Add.self, List.self, Disable.self, ResetPassword.self]
    )

    /// How a password is given: typed at a prompt without echo, or one line on stdin.
    struct PasswordOptions: ParsableArguments {
        @Flag(help: "Read the password from the first line of standard input (for scripts).")
        var passwordStdin = false

        func read() throws -> String {
            if passwordStdin {
                guard let line = Swift.readLine(strippingNewline: true) else { throw CLIError.usage("no password on standard input") }
                return line
            }
            let first = try Self.prompt("Password: ")
            let second = try Self.prompt("Again: ")
            guard first == second else { throw CLIError.usage("the two passwords differ") }
            return first
        }

        /// Reads a line from the terminal with echo off.
        static func prompt(_ text: String) throws -> String {
            guard isatty(STDIN_FILENO) == 1 else {
                throw CLIError.usage("no terminal to ask for the password", hint: "use --password-stdin")
            }
            Console.err(text)
            var saved = termios()
            tcgetattr(STDIN_FILENO, &saved)
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
            defer {
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
                Console.errLine("")
            }
            guard let line = Swift.readLine(strippingNewline: true) else { throw CLIError.usage("no password given") }
            return line
        }
    }

    enum Role: String, CaseIterable, ExpressibleByArgument {
        case viewer, editor
    }

    static func show(_ answer: JSONValue, json: Bool) {
        if json {
            Console.outLine(answer.prettyString())
            return
        }
        let name = answer["name"]?.stringValue ?? "?"
        let role = answer["role"]?.stringValue ?? "?"
        let state = answer["disabled"]?.boolValue == true ? "disabled" : "active"
        Console.outLine("\(name): \(role), \(state)\(answer["totp"]?.boolValue == true ? ", second factor set" : "")")
        if let url = answer["totpURL"]?.stringValue {
            Console.outLine("authenticator link (show it only to \(name)): \(url)")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a person (at least 12 characters of password).")
        @OptionGroup var options: GlobalOptions
        @Argument(help: "The name they sign in with (a-z A-Z 0-9 . _ - @).") var name: String
        @Option(help: "viewer or editor.") var role: Role
        @Flag(help: "Set up a second factor (TOTP); prints the link for an authenticator app.") var totp = false
        @OptionGroup var password: PasswordOptions

        func run() async throws {
            let secret = try password.read()
            let answer = try await options.api().send("POST", "/v1/users", body: .object([
                "name": .string(name), "role": .string(role.rawValue), "password": .string(secret), "totp": .bool(totp),
            ]))
            UsersCommand.show(answer, json: options.json)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the people, their role and state.")
        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let answer = try await options.api().get("/v1/users")
            if options.json {
                Console.outLine(answer.prettyString())
                return
            }
            let users = answer["users"]?.arrayValue ?? []
            var table = TextTable(headers: ["NAME", "ROLE", "STATE", "2FA", "LAST VISIT"])
            for u in users {
                table.append([
                    u["name"]?.stringValue ?? "", u["role"]?.stringValue ?? "", u["disabled"]?.boolValue == true ? "disabled" : "active",
                    u["totp"]?.boolValue == true ? "yes" : "no", u["lastVisit"]?.stringValue ?? "never",
                ])
            }
            Console.outLine(users.isEmpty ? "no users: add one with `progsync users add NAME --role viewer|editor`" : table.render())
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a person: signed out at once, no more sign-ins.")
        @OptionGroup var options: GlobalOptions
        @Argument var name: String
        @Flag(help: "Enable again instead.") var enable = false

        func run() async throws {
            let answer = try await options.api().send("POST", "/v1/users/" + URLQuery.segment(name), body: .object(["disabled": .bool(!enable)]))
            UsersCommand.show(answer, json: options.json)
        }
    }

    struct ResetPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-password", abstract: "Set a new password (signs the person out); --totp also makes a new second factor.")
        @OptionGroup var options: GlobalOptions
        @Argument var name: String
        @Option(help: "Change the role too: viewer or editor.") var role: Role?
        @Flag(help: "Make a new TOTP secret and print its authenticator link.") var totp = false
        @OptionGroup var password: PasswordOptions

        func run() async throws {
            var body: [String: JSONValue] = ["password": .string(try password.read())]
            if let role { body["role"] = .string(role.rawValue) }
            if totp { body["totp"] = .bool(true) }
            let answer = try await options.api().send("POST", "/v1/users/" + URLQuery.segment(name), body: .object(body))
            UsersCommand.show(answer, json: options.json)
        }
    }
}
