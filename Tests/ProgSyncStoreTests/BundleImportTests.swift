import Foundation
import ProgSyncCore
import ProgSyncStore
import Testing

/// Crafted bundle files against `Replica.importBundle`, in process (the daemon's route and the
/// CLI add only transport; OfflineTests and CraftedBundleTests cover those end to end).
@Suite struct BundleImportTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie")])

    /// politie's node with `count` commits of its own; the coordinator has none of them and
    /// `own` commits politie lacks.
    func setUp(count: Int = 5, own: Int = 3) throws -> (pol: Replica, coord: Replica) {
        let pol = try network.replica("pol", inMemory: true)
        for i in 1...count {
            _ = try pol.commitLocal(author: "anna", writes: [FieldWrite(record: "a\(i)", field: "kind", value: "activity"),
                                                             FieldWrite(record: "a\(i)", field: "owner", value: "politie")])
        }
        let coord = try network.replica("coord", inMemory: true)
        for i in 0..<own { _ = try coord.commitLocal(author: "jan", writes: [FieldWrite(record: "c\(i)", field: "kind", value: "action-line")]) }
        return (pol, coord)
    }

    /// What `GET /v1/bundle?all=true` on `replica` would hold, with `vector` in the header
    /// (the replica's own by default).
    func bundle(of replica: Replica, vector: [NodeID: UInt64]? = nil, node: NodeID? = nil) throws -> CommitBundle {
        let vector = vector ?? replica.versionVector
        let header = JSONValue.object([
            "node": .string((node ?? replica.nodeID).rawValue),
            "versionVector": .object(Dictionary(uniqueKeysWithValues: vector.map { ($0.key.rawValue, JSONValue.int(Int64($0.value))) })),
        ])
        return CommitBundle(header: header, commits: try replica.rawCommits(missingFrom: [:]).map { ($0.body, $0.signature) })
    }

    /// The commits `bundle export --peer` would carry to `peer`.
    func exportCount(_ replica: Replica, to peer: NodeID) throws -> Int {
        try replica.rawCommits(missingFrom: replica.knownVector(of: peer)?.vector ?? [:]).count
    }

    @Test func sealedHeaderIsRecordedAsWhatTheExporterHolds() throws {
        let (pol, coord) = try setUp()
        let result = try coord.importBundle(try bundle(of: pol).encoded(signedBy: pol.identity))
        #expect(result.headerVerified && result.report.applied == 5)
        #expect(try coord.knownVector(of: pol.nodeID)?.vector == pol.versionVector)
        #expect(try exportCount(coord, to: pol.nodeID) == 3, "politie lacks exactly the coordinator's own commits")
    }

    /// A header that claims politie holds everything must not make later exports to politie
    /// empty, whether unsigned (format 1), sealed by an unregistered key, sealed by another
    /// registered node, or from a node outside the registry.
    @Test func forgedOrUnsignedHeaderDoesNotStopLaterExports() throws {
        let (pol, coord) = try setUp()
        let forgedVector: [NodeID: UInt64] = [coord.nodeID: 1_000_000, pol.nodeID: 1_000_000]
        let lie = try bundle(of: pol, vector: forgedVector)

        let unsigned = try coord.importBundle(try lie.encodedFormat1())
        #expect(!unsigned.headerVerified && unsigned.headerNote?.contains("older progsync") == true)
        #expect(unsigned.report.applied == 5, "the commits verify on their own and are imported")
        #expect(try coord.knownVector(of: pol.nodeID) == nil)
        #expect(try exportCount(coord, to: pol.nodeID) == 8)

        let before = coord.digestRoot
        for forger in [NodeIdentity(), coord.identity] {
            #expect(throws: BundleError.self) { try coord.importBundle(try lie.encoded(signedBy: forger)) }
        }
        let stranger = NodeIdentity()
        let foreign = try coord.importBundle(try bundle(of: pol, vector: forgedVector, node: stranger.id).encoded(signedBy: stranger))
        #expect(!foreign.headerVerified && foreign.report.duplicates == 5)
        #expect(coord.digestRoot == before)
        #expect(try coord.knownVector(of: pol.nodeID) == nil && coord.knownVector(of: stranger.id) == nil)
        #expect(try exportCount(coord, to: pol.nodeID) == 8)

        // politie's own sealed word is taken: it lacks the coordinator's three commits.
        _ = try coord.importBundle(try bundle(of: pol).encoded(signedBy: pol.identity))
        #expect(try exportCount(coord, to: pol.nodeID) == 3)
    }

    /// A commit whose seq is 0, 2^63 or 2^64-1, signed by politie or by nobody, after valid ones:
    /// the whole bundle is refused and nothing is applied (a seq of 2^63 once trapped the daemon).
    @Test func outOfRangeSeqRefusesTheWholeBundle() throws {
        let (pol, coord) = try setUp()
        let valid = try bundle(of: pol)
        let digest = coord.digestRoot, vector = coord.versionVector
        let stranger = NodeIdentity()
        for seq: UInt64 in [0, 1 << 63, .max] {
            for signer in [pol.identity, stranger] {
                let commit = Commit(origin: signer.id, seq: seq, stamp: Stamp(milliseconds: 1_800_000_000_000, counter: 0), author: "x",
                                    prev: seq == 0 ? [] : [UInt8](repeating: 7, count: 32),
                                    changes: [Change(record: "a1", field: "title", value: "overgenomen")])
                let signature = signer.id == pol.nodeID ? try signer.sign(commit.canonicalBytes) : [UInt8](repeating: 0, count: 64)
                var crafted = valid
                crafted.commits.append((commit.canonicalBytes, signature))
                #expect(throws: BundleError.self, "seq \(seq)") { try coord.importBundle(try crafted.encoded(signedBy: pol.identity)) }
                #expect(coord.digestRoot == digest && coord.versionVector == vector, "seq \(seq) changed the replica")
            }
        }
        #expect(try coord.knownVector(of: pol.nodeID) == nil)
    }

    /// 200 seeded cuts and bit flips of a valid bundle: each one is refused whole, and the
    /// replica (digest, log, known vectors) is unchanged. The format's seal is a SHA-256 over
    /// every byte before it, signed by the exporter, so no byte is outside the check.
    @Test func cutsAndBitFlipsAreRefusedWhole() throws {
        let (pol, coord) = try setUp(count: 20, own: 1)
        let file = try bundle(of: pol).encoded(signedBy: pol.identity)
        let digest = coord.digestRoot, vector = coord.versionVector
        var random = SeededRandom(seed: 0xB0D1E)
        for attempt in 0..<200 {
            var damaged = file
            let what: String
            if attempt % 2 == 0 {
                let keep = Int.random(in: 0..<file.count, using: &random)
                damaged.removeSubrange(keep...)
                what = "cut to \(keep) bytes"
            } else {
                let offset = Int.random(in: 0..<file.count, using: &random)
                damaged[offset] ^= 1 << UInt8.random(in: 0...7, using: &random)
                what = "bit flipped at \(offset)"
            }
            #expect(throws: BundleError.self, "\(what) of \(file.count)") { try coord.importBundle(damaged) }
            #expect(coord.digestRoot == digest && coord.versionVector == vector, "\(what) changed the replica")
        }
        #expect(try coord.knownVector(of: pol.nodeID) == nil)
        #expect(try coord.importBundle(file).report.applied == 20)
    }
}
