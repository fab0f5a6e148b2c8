// Applies one large batch of commits to a replica in one transaction, for the crash test:
//   progsync-crash-writer DB_PATH COMMITS
// The origin key is fixed, so the parent test can verify what landed.
import Crypto
import Foundation
import ProgSyncCore
import ProgSyncStore

let path = CommandLine.arguments[1]
let count = Int(CommandLine.arguments[2]) ?? 3000
let origin = NodeIdentity(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 42, count: 32)))
let registry = PartnerRegistry(nodes: [PartnerRegistry.Node(org: "jenv", publicKey: origin.publicKey)], coordinators: ["jenv"])
var commits: [SignedCommit] = []
var prev: [UInt8] = []
for i in 1...count {
    let changes = (0..<10).map { f in
        Change(record: "crash.a\(i)", field: ["kind", "title", "status", "explanation", "owner", "number", "theme", "due", "partners", "links"][f],
               value: [JSONValue.string("activity"), .string("Activiteit \(i)"), .string("on-track"), .string("Toelichting \(i)"),
                       .string("jenv"), .int(Int64(i % 100 + 1)), .string("Signalering"), .string("2026-12-31"), ["om"], ["https://example.org"]][f])
    }
    let c = try SignedCommit.sign(Commit(origin: origin.id, seq: UInt64(i), stamp: Stamp(milliseconds: 1_700_000_000_000 + UInt64(i), counter: 0),
                                         author: "crash", prev: prev, changes: changes), with: origin)
    prev = c.hash
    commits.append(c)
}
let replica = try Replica(configuration: ReplicaConfiguration(
    path: path, identity: NodeIdentity(), org: "om", registry: registry, now: { 1_800_000_000_000 }))
print("applying", count)
let report = try replica.apply(commits)
print("applied", report.applied)
