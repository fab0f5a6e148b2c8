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
