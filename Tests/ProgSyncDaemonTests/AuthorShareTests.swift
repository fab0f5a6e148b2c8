import Foundation
import Logging
import ProgSyncCore
import ProgSyncStore
import Testing

@testable import ProgSyncDaemon

/// `author.share`: what local commits tell partners about the person who made them (AVG).
@Suite(.serialized)
struct AuthorShareTests {
    /// The key as the real daemon reads it, from YAML and from the environment: a wrong value is
    /// refused in one line before anything starts.
    @Test func configurationKeyIsReadAndChecked() async throws {
        #expect(DaemonConfiguration().authorShare == .pseudonym)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-share-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let yaml = folder.appendingPathComponent("progsyncd.yaml").path
        try "progsync:\n  author:\n    share: nom\n".write(toFile: yaml, atomically: true, encoding: .utf8)
        let data = folder.appendingPathComponent("data").path
        for (arguments, environment, value) in [
            (["--config", yaml], [String: String](), "nom"), ([], ["PROGSYNC_AUTHOR_SHARE": "names"], "names"),
        ] {
            let result = try await runProcess(
                Binaries.progsyncd, ["--data-dir", data, "--empty"] + arguments, environment: Binaries.cleanEnvironment(environment), timeout: 30)
            #expect(result.exitCode != 0 && !result.signalled, "\(result)")
            #expect(result.stderr.contains("author.share must be name or pseudonym, not \(value)"), "\(result)")
            #expect(!FileManager.default.fileExists(atPath: data + "/replica.sqlite"))
        }
    }

    /// A write through the socket, then what a partner receives and shows, and what this node shows.
    @Test(arguments: [DaemonConfiguration.AuthorSharing.pseudonym, .name])
    func authorOnTheWireAndInHistory(sharing: DaemonConfiguration.AuthorSharing) async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pse2e-author-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: folder) }
        var configuration = DaemonConfiguration(dataDirectory: folder.appendingPathComponent("data").path)
        configuration.loadSampleData = false
        configuration.authorShare = sharing
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let me = try NodeFiles.createIdentity(at: configuration.identityPath, org: "jenv", name: "hub")
        let partner = NodeIdentity()
        let registry = PartnerRegistry(
            nodes: [.init(org: "jenv", publicKey: me.identity.publicKey, name: "hub"),
                    .init(org: "politie", publicKey: partner.publicKey, name: "politie-1")],
            coordinators: ["jenv"])
        try (registry.json.prettyString() + "\n").write(toFile: configuration.registryPath, atomically: true, encoding: .utf8)
        var logger = Logger(label: "progsyncd-test")
        logger.logLevel = .critical
        let daemon = try buildDaemon(configuration: configuration, logger: logger)
        let run = Task { try await daemon.run() }
        defer { run.cancel() }
        let client = try InProcessClient(socketPath: configuration.socketPath)
        defer { client.shutdown() }
        #expect(await eventually(timeout: 20) { (try? await client.send("GET", "/v1/status").0) == 200 })

        let user = LocalRequestContext.userName(uid: getuid())
        let (created, _) = try await client.send("PUT", "/v1/records/share.al1", ["kind": "action-line", "number": 1, "title": "Gedeeld"])
        #expect(created == 201)

        // What a partner receives: the commit as it stands in the changes feed.
        let sent = try daemon.replica.commits(afterLSN: 0, limit: 100).map(\.commit)
        let commit = try #require(sent.first)
        #expect(sent.count == 1)
        let pseudonym = commit.commit.author
        switch sharing {
        case .pseudonym:
            #expect(pseudonym.wholeMatch(of: /u-[0-9a-f]{10}/) != nil, "\(pseudonym)")
            #expect(!commit.canonicalBytes.contains(Array(user.utf8)), "the user name travels in the commit")
        case .name:
            #expect(pseudonym == user)
        }

        // This node shows the name: history, the record's versions, and after a restart of the reader.
        let (_, history) = try await client.send("GET", "/v1/records/share.al1/history")
        #expect(history["history"]?.arrayValue?.first?["author"]?.stringValue == user)
        let (_, record) = try await client.send("GET", "/v1/records/share.al1")
        #expect(record["versions"]?["title"]?["author"]?.stringValue == user)

        // The partner shows what it received.
        let partnerReplica = try Replica(configuration: ReplicaConfiguration(
            path: ":memory:", identity: partner, org: "politie", registry: registry))
        #expect(try partnerReplica.apply(sent).applied == 1)
        #expect(try partnerReplica.author(of: CommitRef(origin: me.identity.id, seq: 1)) == pseudonym)
        #expect(try partnerReplica.history(ofRecord: "share.al1").map(\.commit.commit.author) == [pseudonym])

        // A partner that puts our pseudonym on its own commit is not shown as our user here.
        let borrowed = try partnerReplica.commitLocal(author: pseudonym, writes: [
            FieldWrite(record: "share.pol1", field: "kind", value: "action-line"),
            FieldWrite(record: "share.pol1", field: "owner", value: "politie"),
        ])
        #expect(try daemon.replica.apply([borrowed]).applied == 1)
        let (_, theirs) = try await client.send("GET", "/v1/records/share.pol1/history")
        #expect(theirs["history"]?.arrayValue?.first?["author"]?.stringValue == pseudonym)
        let (_, theirRecord) = try await client.send("GET", "/v1/records/share.pol1")
        #expect(theirRecord["versions"]?["kind"]?["author"]?.stringValue == pseudonym)

        // The conflicts listing: our version shows the name, the partner's its pseudonym.
        #expect(try await client.send("PATCH", "/v1/records/share.pol1", ["title": "Ons"]).0 == 200)
        let concurrent = try partnerReplica.commitLocal(author: pseudonym, writes: [FieldWrite(record: "share.pol1", field: "title", value: "Hun")])
        #expect(try daemon.replica.apply([concurrent]).applied == 1)
        let (_, conflicts) = try await client.send("GET", "/v1/conflicts")
        let conflict = try #require(conflicts["conflicts"]?.arrayValue?.first { $0["id"]?.stringValue == "share.pol1~title" }, "\(conflicts)")
        let versions = conflict["versions"]?.arrayValue ?? []
        #expect(versions.count == 2)
        for version in versions {
            let ours = version["origin"]?.stringValue == me.identity.id.rawValue
            #expect(version["author"]?.stringValue == (ours ? user : pseudonym), "\(version)")
        }
    }

    /// Stable per user on one node, different on another node, and no trace of the name.
    @Test func pseudonymIsStablePerNode() throws {
        let a = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: NodeIdentity(), org: "jenv", registry: PartnerRegistry()))
        let b = try Replica(configuration: ReplicaConfiguration(path: ":memory:", identity: NodeIdentity(), org: "jenv", registry: PartnerRegistry()))
        let onA = CommitAuthors(sharing: .pseudonym, replica: a), onB = CommitAuthors(sharing: .pseudonym, replica: b)
        let first = try onA.commitAuthor(forUser: "jdevries")
        #expect(try onA.commitAuthor(forUser: "jdevries") == first)
        #expect(try CommitAuthors(sharing: .pseudonym, replica: a).commitAuthor(forUser: "jdevries") == first)
        #expect(try onA.commitAuthor(forUser: "pjansen") != first)
        #expect(try onB.commitAuthor(forUser: "jdevries") != first)
        #expect(try CommitAuthors(sharing: .name, replica: a).commitAuthor(forUser: "jdevries") == "jdevries")
    }
}

extension Array where Element: Equatable {
    fileprivate func contains(_ needle: [Element]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return needle.isEmpty }
        return (0...(count - needle.count)).contains { i in self[i..<(i + needle.count)].elementsEqual(needle) }
    }
}
