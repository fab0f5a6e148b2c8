import ArgumentParser
import Foundation

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The daemon's Unix socket.",
            discussion: "Default: $PROGSYNC_SOCKET, else $PROGSYNC_DATA/progsync.sock, else ./progsync-data/progsync.sock.",
            valueName: "path"
        )
    )
    var socket: String?

    @Flag(name: .long, help: "Print the daemon's JSON (pretty) instead of a table, for scripts.")
    var json = false

    /// The socket path after applying the defaults.
    var socketPath: String {
        SocketPath.resolve(option: socket, environment: ProcessInfo.processInfo.environment)
    }

    func api() throws -> LocalAPIClient {
        try LocalAPIClient(socketPath: socketPath)
    }

    /// `progsync --socket PATH --json digest` as `progsync digest --socket PATH --json` (as
    /// `git -C` and `docker -H` take theirs): global options written before the subcommand move
    /// to just after its full name (`records list`), where the subcommand's own parser reads
    /// them, so every command keeps a single definition of the options and its help.
    static func movedAfterSubcommand(_ arguments: [String], root: any ParsableCommand.Type) -> [String] {
        var global: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--json" || argument.hasPrefix("--socket=") {
                global.append(argument)
                index += 1
            } else if argument == "--socket", index + 1 < arguments.count {
                global += arguments[index...index + 1]
                index += 2
            } else {
                break
            }
        }
        guard !global.isEmpty else { return arguments }
        let afterGlobal = index
        var command = root
        while index < arguments.count,
              let sub = command.configuration.subcommands.first(where: { ([$0._commandName] + $0.configuration.aliases).contains(arguments[index]) }) {
            command = sub
            index += 1
        }
        guard index > afterGlobal else { return arguments }  // no subcommand: let the parser explain
        return Array(arguments[afterGlobal..<index]) + global + arguments[index...]
    }
}

/// How the socket path is chosen.
public enum SocketPath {
    public static let fileName = "progsync.sock"
    public static let defaultDataFolder = "./progsync-data"

    /// `--socket`, else `PROGSYNC_SOCKET`, else `$PROGSYNC_DATA/progsync.sock`, else
    /// `./progsync-data/progsync.sock`. Empty values count as unset.
    public static func resolve(option: String?, environment: [String: String]) -> String {
        if let option, !option.isEmpty { return option }
        if let socket = environment["PROGSYNC_SOCKET"], !socket.isEmpty { return socket }
        if let data = environment["PROGSYNC_DATA"], !data.isEmpty {
            return data.hasSuffix("/") ? data + fileName : data + "/" + fileName
        }
        return defaultDataFolder + "/" + fileName
    }
}
