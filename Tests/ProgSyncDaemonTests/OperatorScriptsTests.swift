import Foundation
import ProgSyncCore
import Testing

/// What an operator runs besides the API: `--version`, the scripts in Deploy/ and scripts/.
@Suite(.serialized)
struct OperatorScriptsTests {
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `git rev-parse` of the checkout, nil where git cannot read it (a tarball, a bind mount).
    static func checkoutCommit() async -> String? {
        guard let result = try? await runProcess("/usr/bin/git", ["-C", repository.path, "rev-parse", "--short=12", "HEAD"]),
              result.exitCode == 0 else { return nil }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func versionNamesTheReleaseAndTheCommit() async throws {
        let release = try String(contentsOf: Self.repository.appendingPathComponent("VERSION"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let commit = await Self.checkoutCommit()
        for (program, binary) in [("progsyncd", Binaries.progsyncd), ("progsync", Binaries.progsync)] {
            let result = try await runProcess(binary, ["--version"])
            #expect(result.exitCode == 0, "\(result)")
            let line = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(line.hasPrefix("\(program) \(release) (commit "), "\(result)")
            // Built from this checkout: its commit (maybe `-dirty`); git unreadable: `unknown`.
            #expect(line.hasPrefix("\(program) \(release) (commit \(commit ?? "unknown")"), "\(result); checkout at \(commit ?? "?")")
        }
    }

    /// Deploy/local-network.sh builds its network through invites (`--orgs 4`: jenv, politie,
    /// comensha, vng), the nodes converge and `status` shows one equal digest per node (it
    /// printed `digest ?` while `--socket` had to follow the subcommand).
    @Test(.timeLimit(.minutes(3))) func localNetworkStatusShowsEqualDigests() async throws {
        let net = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-net-\(UUID().uuidString.prefix(8))").path
        let script = Self.repository.appendingPathComponent("Deploy/local-network.sh").path
        let env = Binaries.cleanEnvironment([
            "PROGSYNC_NET": net, "PROGSYNC_BIN": URL(fileURLWithPath: Binaries.progsyncd).deletingLastPathComponent().path,
            "PROGSYNC_NET_BASE_PORT": "\(Int.random(in: 20_000...28_000))",
        ])
        defer { try? FileManager.default.removeItem(atPath: net) }
        let start = try await runProcess("/bin/bash", [script, "start", "--orgs", "4"], environment: env, timeout: 60)
        #expect(start.exitCode == 0, "\(start)")
        var status = start
        var digests: [String] = []
        let converged = await eventually(timeout: 60) {
            guard let s = try? await runProcess("/bin/bash", [script, "status"], environment: env) else { return false }
            status = s
            digests = s.stdout.split(separator: "\n").compactMap { line in
                line.range(of: "digest ").map { String(line[$0.upperBound...]) }
            }
            if digests.count == 4 && Set(digests).count == 1 { return true }
            try? await Task.sleep(for: .milliseconds(500))
            return false
        }
        let partners = try await runProcess(Binaries.progsync, ["partners", "list", "--socket", net + "/vng/progsync.sock"], environment: env)
        #expect(["jenv", "politie", "comensha", "vng"].allSatisfy { partners.stdout.contains($0) } && !partners.stdout.contains("retired"), "\(partners)")
        #expect(start.stdout.contains("vng: joined by invite"), "\(start)")
        let stop = try await runProcess("/bin/bash", [script, "stop"], environment: env, timeout: 60)
        #expect(stop.exitCode == 0, "\(stop)")
        #expect(converged, "\(status)")
        #expect(digests.allSatisfy { $0.count == 64 && $0.allSatisfy(\.isHexDigit) }, "\(status)")
    }
}
