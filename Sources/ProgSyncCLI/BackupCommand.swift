import ArgumentParser
import Foundation
import ProgSyncCore

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Write a consistent copy of the replica to a file while progsyncd keeps running.",
        discussion: """
            progsyncd writes the file itself (SQLite's online backup), so its user must be able to \
            write to the folder. The copy is checked (SQLite integrity check, digest recomputed from \
            its records) before it takes the file name. Restore it with `progsyncd restore FILE` \
            while the daemon is stopped.

            Examples:
              progsync backup -o /var/backups/progsync/replica-$(date +%F).sqlite
              progsync backup -o replica.sqlite --force
            """)

    @OptionGroup var options: GlobalOptions

    @Option(name: .shortAndLong, help: "The backup file (a relative path is taken from the current folder).")
    var output: String

    @Flag(help: "Replace the file if it exists.")
    var force = false

    func run() async throws {
        let path = output.hasPrefix("/") ? output : FileManager.default.currentDirectoryPath + "/" + output
        let answer = try await options.api().send(
            "POST", "/v1/backup", body: .object(["path": .string(path), "force": .bool(force)]), timeout: .seconds(3600))
        if options.json { return Console.out(answer.prettyString() + "\n") }
        let bytes = answer["bytes"]?.intValue ?? 0
        Console.out("""
            backup:    \(answer["path"]?.stringValue ?? path)
            size:      \(bytes) bytes (\(String(format: "%.1f", Double(bytes) / 1_048_576)) MiB)
            digest:    \(answer["digest"]?.stringValue ?? "?")
            integrity: \(answer["integrity"]?.stringValue ?? "?")
            taken at:  \(answer["takenAt"]?.stringValue ?? "?")

            """)
    }
}

struct ResumeWritesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume-writes",
        abstract: "After a restore, accept local writes without waiting for every partner.",
        discussion: """
            A restored node waits until each partner has said how far it holds this node's own \
            commits and those commits are back, so that a new local commit cannot reuse a number a \
            partner already holds (a fork partners refuse). Use this only when a partner is gone \
            for good, or it never had commits from this node newer than the backup.
            """)

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let answer = try await options.api().send("POST", "/v1/resume-writes")
        if options.json { return Console.out(answer.prettyString() + "\n") }
        Console.outLine(answer["resumed"]?.boolValue == true ? "local writes resumed" : "local writes were not waiting")
    }
}
