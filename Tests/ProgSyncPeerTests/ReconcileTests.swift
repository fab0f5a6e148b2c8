import Foundation
import ProgSyncCore
import ProgSyncDaemon
import ProgSyncHTTPClient
import Testing

/// Reconciliation when the replicas do not agree (DESIGN §9): the digest narrowing, the
/// `disagree` and `unreachable` verdicts, the peer digest routes, and `progsync reconcile`'s exit status.
@Suite(.serialized) struct ReconcileTests {
    static let members = [("jenv", "jenv"), ("politie", "politie")]

    func reconcileCLI(_ net: PeerNetwork, _ name: String) throws -> (status: Int32, output: String) {
        try PeerNetwork.run(PeerNetwork.locate("progsync"), ["reconcile", "--socket", net.nodes[name]!.socket])
    }

    /// The same commits on both sides, one winner changed behind politie's back with its digest
    /// recomputed to match (so politie's self-check cannot see it): only the comparison of the two
    /// trees finds it, and only politie can repair it.
    @Test func narrowingFindsADifferenceUnderEqualVectorsAndTheDamagedSideRepairs() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        try net.start("jenv", sample: true)
        try net.start("politie")
        _ = try await net.waitForAgreement()
        let original = try #require(try await net.request("jenv", "GET", "/v1/records/al1.r01.a02").1["fields"]?["title"])

        net.stop("politie")
        // Rerunning the migration that sums the digest leaves makes politie's digest match its damaged winners.
        let script = """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            a = db.execute("UPDATE fields SET value = '\\"Vervalst\\"' WHERE record = 'al1.r01.a02' AND field = 'title'").rowcount
            b = db.execute("DELETE FROM grdb_migrations WHERE identifier = 'v4-digest-covers-conflicts'").rowcount
            db.commit()
            print(a, b)
            """
        let python = try PeerNetwork.run("/usr/bin/env", ["python3", "-c", script, net.nodes["politie"]!.folder + "/replica.sqlite"])
        try #require(python.status == 0 && python.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1 1", "python3/sqlite3: \(python.output)")
        try net.start("politie")
        #expect(try await net.request("politie", "GET", "/v1/records/al1.r01.a02").1["fields"]?["title"] == "Vervalst")
        #expect(try await net.digest("politie") != net.digest("jenv"))

        // jenv: vectors equal, trees differ; narrowed to the one field, which jenv's log confirms on its side.
        let (status, report) = try await net.request("jenv", "POST", "/v1/reconcile")
        #expect(status == 200 && report["verdict"] == "not in agreement", "\(report)")
        let outcome = try #require(report["peers"]?.arrayValue?.first)
        #expect(outcome["verdict"] == "disagree" && outcome["vectorsEqual"] == true && outcome["digestsEqual"] == false, "\(outcome)")
        let narrowing = try #require(outcome["narrowing"])
        #expect(narrowing["innerDiffering"] == 1 && narrowing["bucketsDiffering"] == 1 && narrowing["entriesDiffering"] == 1, "\(narrowing)")
        #expect(narrowing["fieldsRepaired"] == 0 && narrowing["fieldsStillDiffering"] == 1, "\(narrowing)")
        #expect(narrowing["examples"] == ["al1.r01.a02~title"], "\(narrowing)")
        #expect(outcome["reason"]?.stringValue?.contains("politie must repair its side") == true, "\(outcome)")
        let refused = try reconcileCLI(net, "jenv")
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("verdict: not in agreement") && refused.output.contains("disagree"), "\(refused.output)")
        #expect(try await net.request("jenv", "GET", "/v1/records/al1.r01.a02").1["fields"]?["title"] == original)

        // politie: its self-check finds nothing, the comparison with jenv points at the record, and
        // the rebuild from its own commit log restores the winner.
        let repaired = try await net.request("politie", "POST", "/v1/reconcile").1
        #expect(repaired["verdict"] == "in agreement", "\(repaired)")
        #expect(repaired["selfCheck"]?["divergedBuckets"] == 0, "\(repaired)")
        let politieNarrowing = try #require(repaired["peers"]?.arrayValue?.first?["narrowing"])
        #expect(politieNarrowing["entriesDiffering"] == 1 && politieNarrowing["fieldsRepaired"] == 1
                && politieNarrowing["fieldsStillDiffering"] == 0, "\(politieNarrowing)")
        #expect(try await net.request("politie", "GET", "/v1/records/al1.r01.a02").1["fields"]?["title"] == original)
        #expect(try await net.digest("politie") == net.digest("jenv"))
        let audited = try await net.request("politie", "GET", "/v1/audit").1["events"]?.arrayValue ?? []
        #expect(audited.contains { $0["action"] == "reconcile-repair" && $0["detail"]?.stringValue?.contains("1 fields repaired") == true }, "\(audited)")
        let agreed = try reconcileCLI(net, "jenv")
        #expect(agreed.status == 0 && agreed.output.contains("verdict: in agreement"), "\(agreed.output)")
    }

    @Test func anUnreachablePartnerIsNotAgreement() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        try net.start("jenv")  // politie has an address in the registry but never starts
        let (status, report) = try await net.request("jenv", "POST", "/v1/reconcile")
        #expect(status == 200 && report["verdict"] == "not in agreement", "\(report)")
        let outcome = try #require(report["peers"]?.arrayValue?.first)
        #expect(outcome["name"] == "politie" && outcome["verdict"] == "unreachable", "\(outcome)")
        #expect(outcome["reason"]?.stringValue?.isEmpty == false, "\(outcome)")
        #expect(report["reasons"]?.arrayValue?.contains { $0.stringValue?.hasPrefix("politie: ") == true } == true, "\(report)")
        let cli = try reconcileCLI(net, "jenv")
        #expect(cli.status == 1 && cli.output.contains("unreachable") && cli.output.contains("verdict: not in agreement"), "\(cli.output)")
    }

    /// `/v1/peer/digest`, `/digest/buckets` and `/digest/entries` describe the same tree as the
    /// local digest, and one write changes one bucket, whose entries show it.
    @Test func peerDigestRoutesDescribeTheReplica() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        net.links = ["jenv": []]
        try net.start("jenv", sample: true)
        let jenv = net.nodes["jenv"]!, politie = net.nodes["politie"]!
        let client = try HTTPClient(configuration: .init(
            connectTimeout: .seconds(5), requestTimeout: .seconds(20),
            tls: peerClientTLS(certificatePath: politie.folder + "/tls-cert.pem", keyPath: politie.folder + "/tls-key.pem", peerPin: jenv.pin)))
        defer { client.shutdown() }
        func peer(_ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> JSONValue {
            let response = try await client.send(HTTPClientRequest(
                method: method, url: "https://127.0.0.1:\(jenv.port)" + path, body: body?.canonicalBytes).asPartner())
            guard response.status == 200 else { throw PeerTestError("\(method) \(path): HTTP \(response.status)") }
            return try JSONParser.parse(response.body)
        }
        let innerCount = ReplicaDigest.bucketCount / ReplicaDigest.fanout
        func tree() async throws -> (root: String, inner: [String], buckets: [Int: String]) {
            let digest = try await peer("GET", "/v1/peer/digest")
            let inner = digest["inner"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let all = (0..<innerCount).map(String.init).joined(separator: ",")
            var buckets: [Int: String] = [:]
            for item in try await peer("GET", "/v1/peer/digest/buckets?inner=" + all)["buckets"]?.arrayValue ?? [] {
                if let b = item["bucket"]?.intValue, let sum = item["sum"]?.stringValue { buckets[Int(b)] = sum }
            }
            return (digest["root"]?.stringValue ?? "", inner, buckets)
        }
        func entries(_ buckets: [Int]) async throws -> [[JSONValue]] {
            try await peer("POST", "/v1/peer/digest/entries", ["buckets": .array(buckets.map { .int(Int64($0)) })])["entries"]?
                .arrayValue?.compactMap(\.arrayValue) ?? []
        }

        let before = try await tree()
        #expect(before.root == (try await net.digest("jenv")))
        #expect(before.inner.count == innerCount && before.buckets.count == ReplicaDigest.bucketCount)
        let zero = String(repeating: "00", count: 32)
        let filled = before.buckets.filter { $0.value != zero }.keys.sorted()
        let all = try await entries(filled)
        let status = try await net.request("jenv", "GET", "/v1/status").1
        #expect(Int64(all.count) == status["fields"]?.intValue && status["conflicts"] == 0, "\(all.count) entries, \(status)")
        #expect(all.allSatisfy { $0.count == 7 && $0[6] == false && ($0[4].intValue ?? 0) >= 1 })

        let ack = try await net.write("jenv", "al1.r01.a02", "status", "completed")
        let after = try await tree()
        #expect(after.root == (try await net.digest("jenv")) && after.root != before.root)
        let changed = after.buckets.keys.filter { after.buckets[$0] != before.buckets[$0] }
        #expect(changed.count == 1, "\(changed)")
        #expect(zip(before.inner, after.inner).filter { $0 != $1 }.count == 1)
        let entry = try #require(try await entries(changed).first { $0[0] == "al1.r01.a02" && $0[1] == "status" })
        #expect(entry[2].stringValue == Stamp(rawValue: ack.stamp).hex && entry[3].stringValue == ack.origin
                && entry[4].intValue == ack.seq, "\(entry)")

        // Out-of-range asks are refused, not served.
        for path in ["/v1/peer/digest/buckets?inner=\(innerCount)", "/v1/peer/digest/buckets?inner=-1"] {
            let response = try await client.send(HTTPClientRequest(url: "https://127.0.0.1:\(jenv.port)" + path).asPartner())
            #expect(response.status == 400, "\(path)")
        }
    }
}
