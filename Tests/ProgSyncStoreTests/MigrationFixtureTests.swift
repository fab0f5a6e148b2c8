import Crypto
import Foundation
import GRDB
import ProgSyncCore
import ProgSyncStore
import Testing

/// A replica made by the release before (Tests/Fixtures/replica-v6.sqlite, schema v6-local-authors:
/// commits from two origins, an open conflict, a held commit) must open with this build, migrate,
/// and keep its digest. `replica-v6.json` holds the keys, the registry and what was recorded when
/// the file was made. Regenerate both (only when a release changes the schema, then add a new pair
/// rather than replace this one): PROGSYNC_WRITE_FIXTURES=1 swift test --filter MigrationFixtureTests
@Suite(.serialized) struct MigrationFixtureTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    static let database = folder.appendingPathComponent("replica-v6.sqlite").path
    static let description = folder.appendingPathComponent("replica-v6.json").path
    static let now: UInt64 = 1_800_000_000_000

    struct Fixture {
        var identities: [String: NodeIdentity]
        var orgs: [String: String]
        var registry: PartnerRegistry {
            PartnerRegistry(nodes: identities.keys.sorted().map { PartnerRegistry.Node(org: orgs[$0]!, publicKey: identities[$0]!.publicKey, name: $0) },
                            coordinators: ["jenv"])
        }

        func replica(_ name: String, path: String) throws -> Replica {
            try Replica(configuration: ReplicaConfiguration(
                path: path, identity: identities[name]!, org: orgs[name]!, registry: registry, now: { MigrationFixtureTests.now }))
        }
    }

    @Test func fixtureOpensMigratesAndKeepsItsDigest() throws {
        let json = try JSONParser.parse([UInt8](try #require(FileManager.default.contents(atPath: Self.description))))
        var fixture = Fixture(identities: [:], orgs: [:])
        for node in json["nodes"]?.arrayValue ?? [] {
            let name = try #require(node["name"]?.stringValue)
            let key = try #require(node["privateKey"]?.stringValue.flatMap { Base64.decode($0) })
            fixture.identities[name] = NodeIdentity(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: key))
            fixture.orgs[name] = node["org"]?.stringValue
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-fixture-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("replica.sqlite").path
        try FileManager.default.copyItem(atPath: Self.database, toPath: path)

        let replica = try fixture.replica("coord", path: path)
        let expected = try #require(json["digest"]?.stringValue)
        #expect(Hex.encode(replica.digestRoot) == expected)
        #expect(try replica.conflicts().count == json["conflicts"]?.intValue.map(Int.init))
        #expect(try replica.heldCommits().count == json["held"]?.intValue.map(Int.init))
        #expect(try replica.commits(afterLSN: 0, limit: 1000).count == json["commits"]?.intValue.map(Int.init))
        try replica.close()
        // Recomputed from the migrated rows by this build's digest rule, not only the stored leaves.
        let check = try Replica.checkCopy(at: path)
        #expect(check.digestRecomputed && Hex.encode(check.digest) == expected)
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["PROGSYNC_WRITE_FIXTURES"] == "1"))
    func writeFixture() throws {
        let names = [("coord", "jenv"), ("pol", "politie")]
        let fixture = Fixture(identities: Dictionary(uniqueKeysWithValues: names.map { ($0.0, NodeIdentity()) }),
                              orgs: Dictionary(uniqueKeysWithValues: names.map { ($0.0, $0.1) }))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("progsync-fixture-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let coord = try fixture.replica("coord", path: folder.appendingPathComponent("coord.sqlite").path)
        let pol = try fixture.replica("pol", path: ":memory:")
        for id in ["al1.r01.a01", "al1.r01.a02"] {
            try coord.apply([try pol.commitLocal(author: "anna", writes: [
                FieldWrite(record: id, field: "kind", value: "activity"), FieldWrite(record: id, field: "owner", value: "politie"),
                FieldWrite(record: id, field: "title", value: "Training wijkagenten"), FieldWrite(record: id, field: "status", value: "on-track"),
            ])])
        }
        // Concurrent edits of one field: the coordinator's and politie's, neither saw the other.
        let theirs = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "al1.r01.a01", field: "status", value: "delayed")])
        try coord.commitLocal(author: "coordinator", writes: [FieldWrite(record: "al1.r01.a01", field: "status", value: "completed")])
        try coord.apply([theirs])
        // A gap: seq 5 arrives without seq 4 and is held.
        _ = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "al1.r01.a02", field: "status", value: "delayed")])
        try coord.apply([try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "al1.r01.a02", field: "status", value: "completed")])])
        let description = JSONValue.object([
            "nodes": .array(names.map { name, org in
                .object(["name": .string(name), "org": .string(org),
                         "privateKey": .string(Base64.encode(Array(fixture.identities[name]!.privateKey.rawRepresentation)))])
            }),
            "schema": .string("v6-local-authors"),
            "digest": .string(Hex.encode(coord.digestRoot)),
            "conflicts": .int(Int64(try coord.conflicts().count)),
            "held": .int(Int64(try coord.heldCommits().count)),
            "commits": .int(Int64(try coord.commits(afterLSN: 0, limit: 1000).count)),
        ])
        #expect(try coord.conflicts().count == 1 && coord.heldCommits().count == 1)
        try coord.close()
        // One self-contained file, with no -wal beside it.
        let queue = try DatabaseQueue(path: folder.appendingPathComponent("coord.sqlite").path)
        try queue.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA journal_mode = DELETE; VACUUM") }
        try queue.close()
        try? FileManager.default.removeItem(atPath: Self.database)
        try FileManager.default.copyItem(atPath: folder.appendingPathComponent("coord.sqlite").path, toPath: Self.database)
        try (description.prettyString() + "\n").write(toFile: Self.description, atomically: true, encoding: .utf8)
    }
}
