// Writes commits to a replica for the crash test, reporting each step on stdout as it happens:
//   progsync-crash-writer DB_PATH BATCH SEED [hold]
// First SEED commits, one transaction each ("acknowledged SEQ" once each is durable), then one
// transaction of BATCH commits: "applying" before it starts, "open" from inside it once every row
// is written but nothing is committed, "applied N" after the commit. With `hold`, the writer waits
// for a line on stdin while the transaction is open, so the parent can kill it at that moment.
// The origin key is fixed, so the parent test can verify what landed.
import Crypto
import Foundation
import ProgSyncCore
import ProgSyncStore

// Unbuffered: the parent must see each line when it happens, not when a pipe buffer fills.
func report(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

let path = CommandLine.arguments[1]
let batch = Int(CommandLine.arguments[2]) ?? 3000
let seed = Int(CommandLine.arguments[3]) ?? 0
let hold = CommandLine.arguments.dropFirst(4).first == "hold"
let origin = NodeIdentity(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 42, count: 32)))
let registry = PartnerRegistry(nodes: [PartnerRegistry.Node(org: "jenv", publicKey: origin.publicKey)], coordinators: ["jenv"])
var commits: [SignedCommit] = []
var prev: [UInt8] = []
for i in 1...(seed + batch) {
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
for c in commits.prefix(seed) {
    let applied = try replica.apply([c]).applied
    guard applied == 1 else { report("refused \(c.commit.seq)"); exit(1) }
    report("acknowledged \(c.commit.seq)")
}
report("applying")
let result = try replica.apply(Array(commits.dropFirst(seed))) { _ in
    report("open")
    if hold { _ = readLine() }
}
report("applied \(result.applied)")
