import ArgumentParser
import Foundation
import ProgSyncCore

struct PeersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers",
        abstract: "Show each partner node: state (up, silent, backing-off, refused, retired), last contact, lag and last error.",
        discussion: """
            Example:
              progsync peers
              progsync peers --json
            """
    )

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let answer = try await options.api().get("/v1/peers")
        if options.json {
            Console.outLine(answer.prettyString())
            return
        }
        let peers = answer["peers"]?.arrayValue ?? []
        if peers.isEmpty {
            Console.outLine("no peers: this node's registry lists no other node with an address")
            return
        }
        Console.outLine(HumanFormat.peerTable(peers, width: Console.terminalWidth))
    }
}

struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Sync with partners now and wait until caught up both ways.",
        discussion: """
            Shows progress while it waits. Exits 1 if a peer is not caught up within --timeout.

            Example:
              progsync sync
              progsync sync --peer politie --timeout 120
            """
    )

    @OptionGroup var options: GlobalOptions

    @Option(name: .long, help: "Only this peer (its name or node id).")
    var peer: String?

    @Option(name: .long, help: "Seconds to wait at most.")
    var timeout: Int = 60

    func validate() throws {
        guard (1...600).contains(timeout) else { throw ValidationError("--timeout must be from 1 to 600 seconds") }
    }

    func run() async throws {
        let api = try options.api()
        var query = [("timeout", String(timeout))]
        if let peer { query.append(("peer", peer)) }
        let progress = Task {
            // A second connection, so progress shows while the sync request waits.
            guard let watcher = try? options.api() else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                guard let peers = try? await watcher.get("/v1/peers")["peers"]?.arrayValue else { continue }
                let line = peers.map { p in
                    "\(p["name"]?.stringValue ?? "?"): \(p["state"]?.stringValue ?? "?"), \(p["lagCommits"]?.intValue ?? 0) to pull, \(p["pendingPush"]?.intValue ?? 0) to push"
                }.joined(separator: "; ")
                Console.errLine("sync: " + line)
            }
        }
        let answer: JSONValue
        do {
            answer = try await api.send("POST", "/v1/sync", query: query, timeout: .seconds(timeout + 15))
            progress.cancel()
        } catch {
            progress.cancel()
            throw error
        }
        if options.json {
            Console.outLine(answer.prettyString())
        } else {
            Console.outLine(HumanFormat.peerTable(answer["peers"]?.arrayValue ?? [], width: Console.terminalWidth))
            Console.outLine("digest \(answer["digest"]?.stringValue ?? "?")")
        }
        guard answer["caughtUp"]?.boolValue == true else {
            throw CLIError.failure("not caught up within \(timeout) s; see `progsync peers`")
        }
    }
}
