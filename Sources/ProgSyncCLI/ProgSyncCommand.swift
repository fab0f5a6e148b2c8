import ArgumentParser
import Foundation
import ProgSyncBuildInfo

/// `progsync`: the command-line client of progsyncd's local socket API.
///
/// The executable calls ``main()``; tests and other tools can call ``execute(arguments:)``,
/// which returns the exit code instead of exiting.
public struct ProgSyncCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "progsync",
        abstract: "Read and change the shared programme records through the local progsyncd.",
        discussion: """
            progsync talks to the progsyncd daemon over its Unix socket. Every command prints a \
            table for people by default and the daemon's JSON with --json.

            Examples:
              progsync status
              progsync records list --status delayed
              progsync records set al1.r01.a01 status="In uitvoering maar met vertraging"
              progsync import programme.csv
              progsync report --format html -o overzicht.html
              progsync --socket /run/progsync/progsync.sock --json status

            --socket and --json go before or after the subcommand.

            Exit codes: 0 ok, 1 the daemon refused (or a local step failed), 2 usage error, \
            3 progsyncd not reachable.
            """,
        version: BuildInfo.versionLine("progsync"),
        subcommands: [
            StatusCommand.self,
            RecordsCommand.self,
            ConflictsCommand.self,
            QuarantineCommand.self,
            DigestCommand.self,
            ImportCommand.self,
            ExportCommand.self,
            ReportCommand.self,
            PeersCommand.self,
            SyncCommand.self,
            BundleCommand.self,
            ReconcileCommand.self,
            AuditCommand.self,
            PartnersCommand.self,
            BackupCommand.self,
            ResumeWritesCommand.self,
            UsersCommand.self,
        ]
    )

    public init() {}

    /// Runs with the process's arguments and exits with the command's exit code.
    public static func main() async {
        await main(nil)
    }

    public static func main(_ arguments: [String]?) async {
        let code = await execute(arguments: arguments)
        Foundation.exit(code)
    }

    /// The arguments with `--socket`/`--json` written before the subcommand moved after it.
    public static func globalOptionsMovedAfterSubcommand(_ arguments: [String]) -> [String] {
        GlobalOptions.movedAfterSubcommand(arguments, root: Self.self)
    }

    /// Parses `arguments` (the process's when nil), runs the command and returns the exit
    /// code: 0 ok, 1 refused or failed, 2 usage error, 3 daemon unreachable. Messages go to
    /// stderr; help and `--version` to stdout.
    public static func execute(arguments: [String]?) async -> Int32 {
        do {
            let arguments = globalOptionsMovedAfterSubcommand(arguments ?? Array(CommandLine.arguments.dropFirst()))
            var command = try await asyncParseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            return 0
        } catch let error as CLIError {
            Console.errLine(error.description)
            return error.exitCode
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                // --help, --version: the parser prints them to stdout.
                Console.outLine(fullMessage(for: error))
                return 0
            }
            if code == .validationFailure {
                Console.errLine(fullMessage(for: error))
                return CLIError.Kind.usage.exitCode
            }
            if error is ExitCode { return code.rawValue }
            Console.errLine("error: \(message(for: error))")
            return code.rawValue == 0 ? 1 : code.rawValue
        }
    }
}
