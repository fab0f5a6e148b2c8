import Foundation
import ProgSyncCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The audit log end to end: the real daemon records refusals and operator actions, the real
/// `progsync audit show` lists them, and `progsync audit verify` finds an edited, a removed and
/// a cut-off line, also across a restart.
@Suite(.serialized)
struct AuditLogTests {
    /// A bundle from a node no registry lists: its 30 commits are held (unknown key).
    static func foreignBundle(secret: String) throws -> [UInt8] {
        let stranger = NodeIdentity()
        var commits: [(body: [UInt8], signature: [UInt8])] = []
        var prev: [UInt8] = []
        for seq in 1...30 {
            let commit = Commit(origin: stranger.id, seq: UInt64(seq), stamp: Stamp(milliseconds: nowMilliseconds(), counter: UInt16(seq)),
                                author: "mallory", prev: prev, ownerRefs: [:],
                                changes: [Change(record: "x.\(seq)", field: "explanation", value: .string(secret))])
            let signed = try SignedCommit.sign(commit, with: stranger)
            prev = signed.hash
            commits.append((signed.canonicalBytes, signed.signature))
        }
        let bundle = CommitBundle(header: ["node": .string(stranger.id.rawValue), "commits": 30,
                                           "versionVector": .object([stranger.id.rawValue: 30])], commits: commits)
        return try bundle.encoded(signedBy: stranger)
    }

    static func nowMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    func events(_ daemon: DaemonHarness) async throws -> [JSONValue] {
        let shown = try await daemon.runCLI(["audit", "show", "--json"])
        #expect(shown.exitCode == 0, "\(shown)")
        return try JSONParser.parse(shown.stdout)["events"]?.arrayValue ?? []
    }

    func verify(_ daemon: DaemonHarness) async throws -> ProcessResult {
        try await daemon.runCLI(["audit", "verify"])
    }

    @Test func recordsRefusalsAndOperatorActionsAndVerifyFindsTampering() async throws {
        let daemon = try await DaemonHarness.started()
        defer { daemon.cleanup() }
        let secret = "geheime-toelichting-4711"

        // Refused local writes: a value the schema refuses, a record that does not exist.
        let invalid = try await daemon.request("PUT", "/v1/records/al1.r01.a01", body: ["status": "bogus-status-99"])
        #expect(invalid.status == 422, "\(invalid)")
        let missing = try await daemon.request("PATCH", "/v1/records/al9.r09.a99", body: ["explanation": .string(secret)])
        #expect(missing.status == 404, "\(missing)")
        // A bundle import whose commit is held, and the operator releasing it.
        let imported = try await daemon.request("POST", "/v1/bundle", rawBody: try Self.foreignBundle(secret: secret),
                                                contentType: "application/octet-stream")
        #expect(imported.status == 200, "\(imported)")
        let hash = try #require(try await daemon.get("/v1/quarantine")["held"]?.arrayValue?.first?["hash"]?.stringValue)
        let released = try await daemon.request("POST", "/v1/quarantine/\(hash)/release")
        #expect(released.status == 200, "\(released)")
        // A conflict (a sheet edited from an older basis) that the operator resolves.
        let listed = try await daemon.get("/v1/records?result=al1.r01&basis=true&limit=1000")
        let stale = try #require(listed["records"]?.arrayValue?.first { $0["id"] == "al1.r01.a02" })
        #expect(try await daemon.request("PATCH", "/v1/records/al1.r01.a02", body: ["explanation": "nieuwer"]).status == 200)
        var row = try #require(stale["fields"]?.objectValue)
        row["id"] = "al1.r01.a02"
        row["basis"] = stale["basis"]
        row["explanation"] = "uit het blad"
        let sheet = try await daemon.request("POST", "/v1/import", body: ["records": [.object(row)]])
        #expect(sheet.status == 200, "\(sheet)")
        let resolved = try await daemon.request("POST", "/v1/conflicts/al1.r01.a02~explanation/resolve", body: ["pick": 0])
        #expect(resolved.status == 200, "\(resolved)")
        // Reads and successful writes are not audited (the commit log has those).
        #expect(try await daemon.request("PATCH", "/v1/records/al1.r01.a01", body: ["explanation": "ok"]).status == 200)

        let list = try await events(daemon)
        func find(_ action: String, _ result: String) -> [JSONValue] {
            list.filter { $0["action"]?.stringValue == action && $0["result"]?.stringValue == result }
        }
        let me = LocalUser.name
        let refusals = find("local-write", "refused")
        #expect(refusals.count == 2, "\(list)")
        #expect(refusals.map { $0["object"]?.stringValue } == ["al1.r01.a01", "al9.r09.a99"])
        #expect(refusals.map { $0["reason"]?.stringValue } == ["invalid", "not-found"])
        #expect(refusals.allSatisfy { $0["actor"]?.stringValue == me && $0["origin"]?.stringValue == "local" })
        #expect(find("bundle-import", "imported").count == 1)
        // 30 commits of one origin held for one reason: one event for the lot, not 30.
        let held = find("remote-commit", "held")
        #expect(held.count == 1 && held[0]["reason"]?.stringValue == "unknown-node", "\(list)")
        #expect(held.first?["object"]?.stringValue?.hasSuffix("/1…\(held.first?["actor"]?.stringValue ?? "")/30") == true, "\(held)")
        #expect(held.first?["detail"]?.stringValue?.hasPrefix("30 commits") == true, "\(held)")
        #expect(held.first?["origin"]?.stringValue?.hasPrefix("bundle:") == true)
        #expect(find("quarantine-release", "released").first?["object"]?.stringValue == hash)
        #expect(find("membership", "added").count == 1, "the first start records the registry's one node")
        #expect(find("membership", "changed").first?["detail"] == "- → jenv", "the first start records the coordinators")
        let resolution = find("conflict-resolve", "resolved")
        #expect(resolution.count == 1 && resolution[0]["object"] == "al1.r01.a02~explanation" && resolution[0]["actor"]?.stringValue == me, "\(list)")
        // BIO 8.15's fields on every line, and no record contents.
        for e in list {
            for field in ["action", "object", "result", "origin", "actor", "time"] { #expect(e[field]?.stringValue != nil, "\(field) in \(e)") }
        }
        let file = daemon.dataDir + "/audit.jsonl"
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(!text.contains(secret) && !text.contains("bogus-status-99"))
        let since = try await daemon.runCLI(["audit", "show", "--since", "2999-01-01"])
        #expect(since.exitCode == 0 && since.stdout.contains("no audit events"), "\(since)")
        // Any year is a moment: before 1970 means from the beginning; an impossible date is an error.
        let everything = try await daemon.runCLI(["audit", "show", "--since", "0001-01-01T00:00:00+05:00"])
        #expect(everything.exitCode == 0 && everything.stdout.contains("local-write"), "\(everything)")
        let impossible = try await daemon.runCLI(["audit", "show", "--since", "2026-04-31"])
        #expect(impossible.exitCode != 0 && impossible.stderr.contains("since must be"), "\(impossible)")
        let table = try await daemon.runCLI(["audit", "show"])
        #expect(table.stdout.contains("local-write") && table.stdout.contains("not-found"), "\(table)")

        let intact = try await verify(daemon)
        #expect(intact.exitCode == 0 && intact.stdout.contains("intact"), "\(intact)")

        // 1. An edited line (same length, in place, the daemon running): found at its number.
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let target = try #require(lines.firstIndex { $0.contains("\"reason\":\"not-found\"") })
        try overwrite(file, lines: lines.enumerated().map { $0.offset == target ? $0.element.replacingOccurrences(of: "refused", with: "allowed") : $0.element })
        let edited = try await verify(daemon)
        #expect(edited.exitCode == 1 && edited.stdout.contains("line \(target + 1):"), "\(edited)")
        try overwrite(file, lines: lines)
        #expect(try await verify(daemon).exitCode == 0)

        // 2. A removed line, the daemon stopped meanwhile: found after the restart.
        try await daemon.stop()
        try overwrite(file, lines: lines.enumerated().filter { $0.offset != target }.map(\.element))
        try await daemon.start()
        let removed = try await verify(daemon)
        #expect(removed.exitCode == 1 && removed.stdout.contains("line \(target + 1):") && removed.stdout.contains("removed"), "\(removed)")

        // 3. The last line cut off: the head is ahead, and the restarted daemon records the break
        // in the log itself, so appending cannot hide it.
        try await daemon.stop()
        try overwrite(file, lines: Array(lines.dropLast(2)) + [""])
        try await daemon.start()
        let cut = try await verify(daemon)
        #expect(cut.exitCode == 1, "\(cut)")
        #expect(cut.stdout.contains("cut or changed here") && cut.stdout.contains("were removed"), "\(cut)")
        #expect(try await events(daemon).contains { $0["action"]?.stringValue == AuditChain.chainBreakAction })

        // 4. A membership change: the registry file edited while the daemon was down.
        try await daemon.stop()
        let registryPath = daemon.dataDir + "/registry.json"
        let registry = try String(contentsOfFile: registryPath, encoding: .utf8)
        try registry.replacingOccurrences(of: "\"name\":\"progsyncd\"", with: "\"name\":\"hoofdkantoor\"")
            .replacingOccurrences(of: "\"name\": \"progsyncd\"", with: "\"name\": \"hoofdkantoor\"")
            .write(toFile: registryPath, atomically: true, encoding: .utf8)
        try await daemon.start()
        let changed = try await events(daemon).filter { $0["action"] == "membership" && $0["result"] == "changed" && $0["object"] != "coordinators" }
        #expect(changed.count == 1 && changed[0]["detail"]?.stringValue?.contains("name progsyncd → hoofdkantoor") == true, "\(changed)\n\(registry)")
        #expect(changed.first?["origin"] == "registry" && changed.first?["actor"]?.stringValue == me, "\(changed)")
    }

    /// Rewrites the file in place (same inode: a running daemon keeps appending to it).
    func overwrite(_ path: String, lines: [String]) throws {
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        defer { try? handle.close() }
        let bytes = Data(lines.joined(separator: "\n").utf8)
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: bytes)
    }
}

enum LocalUser {
    static var name: String {
        guard let pw = getpwuid(getuid()), let n = pw.pointee.pw_name else { return "uid:\(getuid())" }
        return String(cString: n)
    }
}
