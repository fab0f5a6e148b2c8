import Foundation
import ProgSyncCore
import ProgSyncHTTPClient
import Testing

/// A partner that misbehaves (issue 11, items 1 and 2): its answers and requests carry extreme
/// integers, pages that do not move forward and malformed JSON. The real daemon must keep
/// answering, apply nothing from a refused answer, say why, and keep converging with honest nodes.
@Suite(.serialized) struct HostilePeerTests {
    static let members = [("jenv", "jenv"), ("politie", "politie"), ("mallory", "om")]

    /// Sends a local API request with its own deadline, so a wedged daemon fails the test instead of hanging it.
    func local(_ net: PeerNetwork, _ name: String, _ method: String, _ path: String, timeout: Duration = .seconds(20))
        async throws -> JSONValue
    {
        let response = try await net.nodes[name]!.client.send(HTTPClientRequest(method: method, url: "http://localhost" + path, timeout: timeout))
        guard response.status == 200 else { throw PeerTestError("\(name) \(method) \(path): HTTP \(response.status)") }
        return try JSONParser.parse(response.body, maxDepth: 64)
    }

    @Test func badAnswersNeitherCrashNorStallTheNode() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        net.links = ["jenv": ["politie", "mallory"], "politie": ["jenv"]]
        let mallory = HostilePartner(net.nodes["mallory"]!)
        let malloryID = mallory.id
        let hello: @Sendable ([String: JSONValue], String) -> HostilePartner.Answer = { vector, digest in
            .json(["node": .string(malloryID), "org": "om", "protocol": 2, "versionVector": .object(vector), "lastLSN": 0,
                   "digest": .string(digest)])
        }
        let noDigest = String(repeating: "ff", count: 32)
        let own = try mallory.commit(seq: 1, [Change(record: "m.1", field: "kind", value: "activity"), Change(record: "m.1", field: "owner", value: "om")])
        // Validly signed, but with seqs no commit can have.
        let seqZero = try mallory.commit(seq: 0, [Change(record: "m.0", field: "kind", value: "activity")])
        let seqHuge = try mallory.commit(seq: 1 << 63, prev: own.hash, [Change(record: "m.1", field: "title", value: "Te ver")])
        mallory.answer("GET /v1/peer/hello") { _ in hello([malloryID: 10], noDigest) }
        mallory.answer("POST /v1/peer/commits", always: ["applied": 0, "versionVector": [:]])
        // The pull feed: one bad answer after another; the last one again and again.
        mallory.answer(
            "GET /v1/peer/commits",
            { _ in .json(["commits": [], "cursor": -5, "more": false, "lastLSN": 10]) },
            { q in .json(["commits": [], "cursor": .int(Int64(q["since"] ?? "") ?? 0), "more": true, "lastLSN": 5]) },
            { _ in .text(#"{"commits": ["#) },
            // Accepted as a page, its commits refused: a far lastLSN is only a large lag.
            { _ in .json(["commits": CommitWire.json([seqZero, seqHuge]), "cursor": 3, "more": false, "lastLSN": .int(.max)]) },
            // Accepted before the fix, this made the lag arithmetic of /v1/status and /v1/peers overflow.
            { _ in .json(["commits": [], "cursor": .int(.max), "more": false, "lastLSN": .int(.min)], delay: .milliseconds(300)) })
        try await mallory.serve(admitting: [net.nodes["jenv"]!, net.nodes["politie"]!])
        try net.start("jenv", sample: true)
        try net.start("politie")
        _ = try await net.waitForAgreement(["jenv", "politie"])

        // 1. The pull loop gets through every bad answer and reaches the honest feed.
        #expect(try await eventually(30) { mallory.requests("GET /v1/peer/commits").count >= 6 },
                "\(mallory.requests("GET /v1/peer/commits"))")
        let peers = try await local(net, "jenv", "GET", "/v1/peers")["peers"]?.arrayValue ?? []
        let seen = try #require(peers.first { $0["name"] == "mallory" })
        #expect(seen["pulled"] == 3 && seen["lagCommits"] == .int(.max - 3) && seen["lastError"]?.stringValue?.contains("refused") == true,
                "\(seen)")
        _ = try await local(net, "jenv", "GET", "/v1/status")
        let log = net.log("jenv")
        #expect(log.contains("cursor -9223372036854775808") || log.contains("lastLSN -9223372036854775808"), "the extreme cursor is logged")
        #expect(log.contains("unmoved from"), "the answer with more and no progress is logged")
        #expect(log.contains(#"msg="partner commit refused" channel=pull:"#), "the commits with seq 0 and 2^63 are logged as refused")
        // The answers after the refused ones ask from an unchanged cursor.
        let sinces = mallory.requests("GET /v1/peer/commits").compactMap { $0.split(separator: "since=").last?.split(separator: "&").first }
        #expect(sinces.allSatisfy { $0 == "0" || $0 == "3" }, "\(sinces)")

        // 2. Reconciliation: every bad answer ends the run for mallory with a reason; nothing of it is applied.
        func reconcileWithMallory() async throws -> (report: JSONValue, outcome: JSONValue) {
            let report = try await local(net, "jenv", "POST", "/v1/reconcile?peer=mallory")
            return (report, report["peers"]?.arrayValue?.first ?? .null)
        }
        // A range page whose highest seq is below `from` (the same first commit, again and again).
        mallory.answer("GET /v1/peer/commits/range", always: ["commits": CommitWire.json([own])])
        var (report, outcome) = try await reconcileWithMallory()
        #expect(report["verdict"] == "not in agreement" && outcome["verdict"] == "unreachable", "\(report)")
        #expect(outcome["reason"]?.stringValue?.contains("outside the range") == true, "\(outcome)")
        let rangeRequests = mallory.requests("GET /v1/peer/commits/range").count
        #expect((1...3).contains(rangeRequests), "the fetch stops at the first page that does not move forward: \(rangeRequests)")

        // A vector naming many origins nobody knows: not one range request for them.
        let madeUp = Dictionary(uniqueKeysWithValues: (0..<500).map { _ in (NodeIdentity().id.rawValue, JSONValue.int(.max)) })
        mallory.answer("GET /v1/peer/hello") { _ in hello(madeUp, noDigest) }
        (report, outcome) = try await reconcileWithMallory()
        #expect(mallory.requests("GET /v1/peer/commits/range").count == rangeRequests, "no range request for an unknown origin")
        #expect(outcome["unknownOrigins"] == 500 && outcome["verdict"] == "disagree", "\(outcome)")
        mallory.answer("GET /v1/peer/hello") { _ in hello([malloryID: 10], noDigest) }

        // A page ending in seq 2^64-1 (paging on would overflow).
        let last = try mallory.commit(seq: .max, prev: own.hash, [Change(record: "m.1", field: "title", value: "Laatste")])
        mallory.answer("GET /v1/peer/commits/range", always: ["commits": CommitWire.json([own, last])])
        (report, outcome) = try await reconcileWithMallory()
        #expect(outcome["verdict"] == "unreachable", "\(outcome)")

        // Equal vectors, different digests: narrowing meets a negative seq in the digest entries.
        let vector = try await local(net, "jenv", "GET", "/v1/status")["versionVector"]?.objectValue ?? [:]
        mallory.answer("GET /v1/peer/hello") { _ in hello(vector, noDigest) }
        let zero = JSONValue.string(String(repeating: "00", count: 32))
        mallory.answer("GET /v1/peer/digest", always: ["root": zero, "inner": .array(Array(repeating: zero, count: ReplicaDigest.bucketCount / ReplicaDigest.fanout))])
        // Bucket 0 claimed different from ours, so narrowing asks for its entries.
        let other = JSONValue.string(String(repeating: "11", count: 32))
        mallory.answer("GET /v1/peer/digest/buckets", always: ["buckets": [["bucket": 0, "sum": other]]])
        mallory.answer("POST /v1/peer/digest/entries", always: ["entries": [["m.1", "title", "0000000000000001", .string(malloryID), -1, zero, false]]])
        (report, outcome) = try await reconcileWithMallory()
        #expect(outcome["verdict"] == "unreachable" && outcome["reason"]?.stringValue?.contains("malformed digest entry") == true, "\(outcome)")
        // Entries naming commits beyond the vectors both sides agree on: no range request for any of them.
        let jenvID = net.nodes["jenv"]!.id
        let rangesBefore = mallory.requests("GET /v1/peer/commits/range").count
        mallory.answer("GET /v1/peer/commits/range", always: ["commits": []])
        mallory.answer("POST /v1/peer/digest/entries", always: ["entries": .array((1...300).map { i in
            JSONValue.array([.string("m.\(i)"), "title", "0000000000000001", .string(jenvID), .int(1_000_000 + Int64(i)), zero, false])
        })])
        (report, outcome) = try await reconcileWithMallory()
        #expect(outcome["verdict"] == "disagree" && outcome["narrowing"]?["fieldsStillDiffering"] == 300, "\(outcome)")
        #expect(mallory.requests("GET /v1/peer/commits/range").count == rangesBefore)
        // Malformed JSON where the digest should be.
        mallory.answer("GET /v1/peer/digest") { _ in .text("{\"root\": ") }
        (report, outcome) = try await reconcileWithMallory()
        #expect(outcome["verdict"] == "unreachable", "\(outcome)")

        #expect(net.nodes["jenv"]!.process?.isRunning == true)
        // Nothing of mallory's was applied or held, and the node starts again (no refused commit is replayed).
        net.stop("jenv")
        try net.start("jenv")
        let status = try await local(net, "jenv", "GET", "/v1/status")
        #expect(status["versionVector"]?[malloryID] == nil && status["rejected"] == 2 && status["held"] == 0, "\(status)")
        for record in ["m.0", "m.1"] { #expect(try await net.request("jenv", "GET", "/v1/records/\(record)").0 == 404) }

        // 3. The honest nodes still converge, and agree in a reconciliation without mallory.
        _ = try await net.write("jenv", "al1.r01.a02", "status", "completed")
        let politieOwns = try #require(try await local(net, "politie", "GET", "/v1/records?owner=politie&limit=1")["records"]?.arrayValue?.first?["id"]?.stringValue)
        _ = try await net.write("politie", politieOwns, "title", "Na de aanval")
        _ = try await net.waitForAgreement(["jenv", "politie"])
        let honest = try await local(net, "jenv", "POST", "/v1/reconcile?peer=politie")
        #expect(honest["verdict"] == "in agreement", "\(honest)")
    }

    @Test func craftedRequestsGetClearRefusals() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        net.links = ["jenv": [], "politie": []]
        try net.start("jenv", sample: true)
        let jenv = net.nodes["jenv"]!
        let mallory = HostilePartner(net.nodes["mallory"]!)
        let client = try mallory.client(to: jenv)
        defer { client.shutdown() }
        let before = try await net.digest("jenv")

        func expectRefused(_ method: String, _ path: String, body: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let (status, json) = try await mallory.send(client, to: jenv, method, path, body: body.map { Array($0.utf8) })
            #expect(status == 400 && json["error"]?.stringValue != nil && json["message"]?.stringValue != nil,
                    "\(method) \(path) \(body ?? ""): \(status) \(json)", sourceLocation: sourceLocation)
        }
        let origin = "origin=\(jenv.id)"
        let range = "/v1/peer/commits/range?\(origin)"
        for (from, to) in [("18446744073709551614", "18446744073709551615"), ("9223372036854775808", "9223372036854775808"),
                           ("1", "9223372036854775808"), ("0", "5"), ("-1", "5"), ("5", "4"), ("x", "5"), ("1", "99999999999999999999")] {
            try await expectRefused("GET", range + "&from=\(from)&to=\(to)")
        }
        // The highest storable seq is a valid (empty) range.
        let top = try await mallory.send(client, to: jenv, "GET", range + "&from=9223372036854775807&to=9223372036854775807")
        #expect(top.status == 200 && top.json["commits"] == [], "\(top)")
        for query in ["since=-1", "since=99999999999999999999", "limit=0", "limit=99999999999999999999", "wait=-1", "wait=31", "wait=x",
                      "wait=1&dials=-1", "wait=1&dials=x", "wait=1&dials=100001", "wait=1&dials=all&pushed=-1", "dials=1&pushed=x",
                      "pushed=99999999999999999999"] {
            try await expectRefused("GET", "/v1/peer/commits?" + query)
        }
        for inner in ["64", "-1", "99999999999999999999", "x"] {
            try await expectRefused("GET", "/v1/peer/digest/buckets?inner=" + inner)
        }
        for body in [#"{"buckets": [4096]}"#, #"{"buckets": [-1]}"#, #"{"buckets": [1e300]}"#, #"{"buckets": [9223372036854775807]}"#,
                     #"{"buckets": "x"}"#, #"{"buckets": ["#] {
            try await expectRefused("POST", "/v1/peer/digest/entries", body: body)
        }
        for body in [#"{"commits": ["#, #"{"commits": "x"}"#, #"{"commits": [{"body": "!!", "sig": "x"}]}"#, "[]", ""] {
            try await expectRefused("POST", "/v1/peer/commits", body: body)
        }
        // Validly signed commits with seqs no commit can have are refused, not held.
        let own = try mallory.commit(seq: 1, [Change(record: "m.1", field: "kind", value: "activity")])
        for seq: UInt64 in [0, 1 << 63, .max] {
            let crafted = try mallory.commit(seq: seq, prev: seq == 0 ? [] : own.hash, [Change(record: "m.1", field: "title", value: "Te ver")])
            let (status, report) = try await mallory.send(client, to: jenv, "POST", "/v1/peer/commits",
                                                          body: JSONValue.object(["commits": CommitWire.json([crafted])]).canonicalBytes)
            #expect(status == 200 && report["rejected"] == 1 && report["applied"] == 0 && report["held"] == 0, "seq \(seq): \(status) \(report)")
        }
        #expect(net.log("jenv").contains(#"msg="partner commit refused" channel=push:"#))
        // The local API's numbers too.
        for path in ["/v1/records?limit=0", "/v1/records?limit=99999999999999999999", "/v1/records?offset=-1"] {
            #expect(try await net.request("jenv", "GET", path).0 == 400, "\(path)")
        }
        for timeout in ["nan", "inf", "1e300", "-1"] {
            #expect(try await net.request("jenv", "POST", "/v1/sync?timeout=\(timeout)").0 == 400, "\(timeout)")
        }
        let far = try await net.request("jenv", "GET", "/v1/records?offset=9223372036854775807")
        #expect(far.0 == 200 && far.1["records"] == [], "\(far)")

        #expect(jenv.process?.isRunning == true)
        #expect(try await net.digest("jenv") == before)
    }
}
