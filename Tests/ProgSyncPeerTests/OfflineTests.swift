import Foundation
import ProgSyncCore
import ProgSyncHTTPClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Offline work (§10), reconciliation (§9) and the clock guard (§5), end to end: real `progsyncd`
/// processes on loopback, a laptop cut off from the network, bundles carried by hand, a replica
/// damaged behind the daemon's back, a node whose clock runs an hour ahead, and a missed nightly run.
@Suite(.serialized) struct OfflineTests {
    /// Coordinator, a politie office node, and a politie laptop in the field.
    static let members: [(name: String, org: String)] = [("jenv", "jenv"), ("politie", "politie"), ("veld", "politie")]

    typealias Edit = AckedWrite

    static func nowMs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    static func milliseconds(ofStamp hex: String?) -> UInt64? { hex.flatMap(Stamp.init(hex:))?.milliseconds }

    /// Raw bytes in and out of a node's local API (bundles are binary).
    func raw(_ net: PeerNetwork, _ name: String, _ method: String, _ path: String, body: [UInt8]? = nil) async throws -> HTTPClientResponse {
        try await net.nodes[name]!.client.send(HTTPClientRequest(method: method, url: "http://localhost" + path, body: body))
    }

    func exportBundle(_ net: PeerNetwork, _ name: String, _ query: String) async throws -> [UInt8] {
        let response = try await raw(net, name, "GET", "/v1/bundle?" + query)
        guard response.status == 200 else { throw PeerTestError("\(name) GET /v1/bundle?\(query): \(response.status) \(String(decoding: response.body, as: UTF8.self))") }
        return response.body
    }

    func importBundle(_ net: PeerNetwork, _ name: String, _ bytes: [UInt8]) async throws -> (Int, JSONValue) {
        let response = try await raw(net, name, "POST", "/v1/bundle", body: bytes)
        return (response.status, (try? JSONParser.parse(response.body)) ?? .null)
    }

    func cli(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try PeerNetwork.run(PeerNetwork.locate("progsync"), arguments)
    }


    /// Creates `count` activities owned by politie through the coordinator.
    func createRecords(_ net: PeerNetwork, count: Int) async throws -> [String] {
        var ids: [String] = []
        for i in 1...count {
            let id = "off.\(i)"
            let (status, body) = try await net.request("jenv", "PUT", "/v1/records/\(id)", [
                "kind": "activity", "result": "al1.r01", "number": .int(Int64(800 + i)), "title": .string("Offline \(i)"), "owner": "politie",
            ])
            guard status == 201 else { throw PeerTestError("PUT \(id): \(status) \(body)") }
            ids.append(id)
        }
        return ids
    }

    /// The offline period: 200 edits on the laptop, 100 each on politie and jenv, all at once.
    /// The laptop and politie both write the explanation of records 0–9, the laptop and jenv the
    /// status of records 0–4; every other (record, field) has one writer only.
    func writeWhileApart(_ net: PeerNetwork, _ records: [String]) async throws -> [Edit] {
        precondition(records.count == 20)
        let statuses = ProgrammeStatus.allCases.map(\.rawValue)
        let plan: [(node: String, count: Int, pairs: [(record: String, field: String)])] = [
            ("veld", 200, records.map { ($0, "explanation") } + records[0..<10].map { ($0, "status") }),
            ("politie", 100, records[0..<10].map { ($0, "explanation") }),
            ("jenv", 100, (records[0..<5] + records[10..<20]).map { ($0, "status") }),
        ]
        return try await withThrowingTaskGroup(of: [Edit].self) { group in
            for (node, count, pairs) in plan {
                group.addTask {
                    var edits: [Edit] = []
                    for i in 0..<count {
                        let (record, field) = pairs[i % pairs.count]
                        let value: JSONValue = field == "status" ? .string(statuses[(i + node.count) % statuses.count]) : .string("\(node) offline \(i)")
                        edits.append(try await net.write(node, record, field, value))
                    }
                    return edits
                }
            }
            var all: [Edit] = []
            for try await part in group { all += part }
            return all
        }
    }

    /// After the merge: every acknowledged commit is on every node; exactly the fields written on
    /// both sides are in conflict, with each side's last value as winner or loser; every other
    /// field holds its only writer's last value; every node lists the same conflicts.
    func checkMerged(_ net: PeerNetwork, _ edits: [Edit]) async throws {
        let records = Set(edits.map(\.record))
        for name in net.order {
            for record in records.sorted() {
                let history = try await net.request(name, "GET", "/v1/records/\(record)/history").1["history"]?.arrayValue ?? []
                let commits = Set(history.map { "\($0["origin"]?.stringValue ?? "")/\($0["seq"]?.intValue ?? 0)" })
                let lost = edits.filter { $0.record == record && !commits.contains("\($0.origin)/\($0.seq)") }
                #expect(lost.isEmpty, "\(name): \(lost.count) acknowledged writes to \(record) missing, e.g. \(lost.first.map { "\($0)" } ?? "")")
            }
        }
        var conflictLists: [String] = []
        for name in net.order { conflictLists.append(try await net.conflictsToCompare(name)) }
        #expect(Set(conflictLists).count == 1, "nodes list different conflicts")

        // "record~field" → origin → that origin's last acknowledged write (edits are in each node's order).
        var last: [String: [String: Edit]] = [:]
        for e in edits { last["\(e.record)~\(e.field)", default: [:]][e.origin] = e }
        let conflicts = try await net.request("veld", "GET", "/v1/conflicts").1["conflicts"]?.arrayValue ?? []
        let byID = Dictionary(conflicts.map { ($0["id"]?.stringValue ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        let expected = Set(last.filter { $0.value.count > 1 }.keys)
        #expect(expected.count == 15)
        #expect(Set(byID.keys) == expected,
                "conflicts: missing \(expected.subtracting(byID.keys).sorted()), unexpected \(Set(byID.keys).subtracting(expected).sorted())")
        var fieldsOf: [String: JSONValue] = [:]
        for record in records { fieldsOf[record] = try await net.request("veld", "GET", "/v1/records/\(record)").1["fields"] }
        for (key, writers) in last.sorted(by: { $0.key < $1.key }) {
            let e = writers.values.first!
            let current = fieldsOf[e.record]?[e.field]
            if writers.count == 1 {
                #expect(current == e.value, "\(key) = \(current ?? .null), expected \(e.node)'s last write \(e.value)")
                continue
            }
            guard let conflict = byID[key] else { continue }
            let versions = conflict["versions"]?.arrayValue ?? []
            #expect(versions.count == writers.count, "\(key): \(versions.count) versions for \(writers.count) writers")
            for (origin, w) in writers {
                #expect(versions.contains { $0["origin"]?.stringValue == origin && $0["value"] == w.value },
                        "\(key): \(w.node)'s last write \(w.value) is neither winner nor loser: \(conflict)")
            }
            let winner = versions.first { $0["winner"] == true }
            #expect(winner?["value"] == current, "\(key): the record shows \(current ?? .null), the conflict's winner is \(winner ?? .null)")
        }
    }

    /// The laptop's view while it is cut off: offline, and both partners waiting for its writes.
    func checkWaiting(_ net: PeerNetwork, laptopEdits: Int, jenvKnown: Bool) async throws {
        let connectivity = try await net.request("veld", "GET", "/v1/status").1["connectivity"]
        #expect(connectivity?["online"] == false, "\(connectivity ?? .null)")
        #expect(connectivity?["peersUp"] == 0)
        let waiting = connectivity?["waiting"]?.arrayValue ?? []
        #expect(Set(waiting.compactMap { $0["name"]?.stringValue }) == ["jenv", "politie"], "\(waiting)")
        let politie = waiting.first { $0["name"] == "politie" }
        #expect(politie?["commits"]?.intValue == Int64(laptopEdits), "politie waits for the laptop's writes: \(politie ?? .null)")
        #expect(politie?["knownAsOf"]?.stringValue != nil)
        let jenv = waiting.first { $0["name"] == "jenv" }
        if jenvKnown {
            #expect(jenv?["commits"]?.intValue == Int64(laptopEdits), "jenv waits for the laptop's writes: \(jenv ?? .null)")
        } else {
            // Never heard from: it is owed everything the laptop holds.
            #expect((jenv?["commits"]?.intValue ?? 0) > Int64(laptopEdits), "\(jenv ?? .null)")
            #expect(jenv?["knownAsOf"] == .null)
        }
        let online = try await net.request("politie", "GET", "/v1/status").1["connectivity"]
        #expect(online?["online"] == true, "politie is connected to jenv: \(online ?? .null)")
    }

    // MARK: 1

    @Test func offlineLaptopReconnectsOverNetwork() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        // The laptop calls out (behind NAT); nobody has its address.
        net.links = ["jenv": ["politie"], "politie": ["jenv"], "veld": ["jenv", "politie"]]
        try net.start("jenv", sample: true)
        try net.start("politie")
        let records = try await createRecords(net, count: 20)
        _ = try await net.waitForAgreement(["jenv", "politie"])
        try net.start("veld")
        _ = try await net.waitForAgreement(timeout: 30)

        // Cut off: the laptop has no address for anyone.
        net.stop("veld")
        net.links["veld"] = []
        try net.start("veld")
        let edits = try await writeWhileApart(net, records)
        _ = try await net.waitForAgreement(["jenv", "politie"], timeout: 30)
        try await checkWaiting(net, laptopEdits: edits.filter { $0.node == "veld" }.count, jenvKnown: true)
        #expect(try await net.digest("veld") != net.digest("politie"))

        // Back on the network.
        net.stop("veld")
        net.links["veld"] = ["jenv", "politie"]
        try net.start("veld")
        let digest = try await net.waitForAgreement(timeout: 60)
        for name in net.order { #expect(try await net.digest(name) == digest) }
        try await checkMerged(net, edits)
        var connectivity: JSONValue?
        let caughtUp = try await eventually(15) {
            connectivity = try await net.request("veld", "GET", "/v1/status").1["connectivity"]
            return connectivity?["online"] == true && (connectivity?["waiting"]?.arrayValue ?? []).allSatisfy { $0["commits"] == 0 }
        }
        #expect(caughtUp, "after the merge the laptop should be online with nobody waiting: \(connectivity ?? .null)")
    }

    // MARK: 2

    @Test func offlineLaptopReconnectsByBundle() async throws {
        let net = try PeerNetwork(Self.members)
        defer { net.tearDown() }
        // No network between the laptop and anyone, ever.
        net.links = ["jenv": ["politie"], "politie": ["jenv"], "veld": []]
        try net.start("jenv", sample: true)
        try net.start("politie")
        let records = try await createRecords(net, count: 20)
        _ = try await net.waitForAgreement(["jenv", "politie"])
        try net.start("veld")

        // The laptop is set up from a bundle: politie never heard from it, so it gets everything.
        let setup = try await exportBundle(net, "politie", "peer=veld")
        let (status0, first) = try await importBundle(net, "veld", setup)
        #expect(status0 == 200, "\(first)")
        #expect((first["commits"]?.intValue ?? 0) > 0 && first["new"] == first["commits"], "\(first)")
        #expect(first["held"] == [] && first["rejected"] == [], "\(first)")
        #expect(try await net.digest("veld") == net.digest("politie"))

        let edits = try await writeWhileApart(net, records)
        _ = try await net.waitForAgreement(["jenv", "politie"], timeout: 30)
        let laptopEdits = edits.filter { $0.node == "veld" }.count
        try await checkWaiting(net, laptopEdits: laptopEdits, jenvKnown: false)

        // Laptop → politie, with the CLI.
        let file = net.root + "/veld-naar-politie.psb"
        let export = try cli(["bundle", "export", "--socket", net.nodes["veld"]!.socket, "--peer", "politie", "-o", file])
        #expect(export.status == 0, "\(export.output)")
        #expect(export.output.contains("wrote \(file): \(laptopEdits) commits"), "\(export.output)")
        let imported = try cli(["bundle", "import", "--socket", net.nodes["politie"]!.socket, file])
        #expect(imported.status == 0, "\(imported.output)")
        #expect(imported.output.contains("bundle from veld (politie)"), "\(imported.output)")
        #expect(imported.output.contains("\(laptopEdits) commits: \(laptopEdits) new, 0 already known, 0 held, 0 rejected"), "\(imported.output)")
        _ = try await net.waitForAgreement(["jenv", "politie"], timeout: 30)

        // Politie → laptop: politie knows the laptop's vector from the bundle's header.
        let back = try await exportBundle(net, "politie", "peer=veld")
        let (status1, second) = try await importBundle(net, "veld", back)
        let othersEdits = edits.count - laptopEdits
        #expect(status1 == 200, "\(second)")
        #expect(second["commits"]?.intValue == Int64(othersEdits) && second["new"]?.intValue == Int64(othersEdits),
                "the bundle should carry exactly politie's and jenv's offline writes: \(second)")
        #expect(second["held"] == [] && second["rejected"] == [], "\(second)")

        let digest = try await net.waitForAgreement(timeout: 30)
        for name in net.order { #expect(try await net.digest(name) == digest) }
        try await checkMerged(net, edits)
        // By politie's last header the laptop owes politie nothing: a new bundle would be empty.
        // (Politie cannot know the laptop applied its bundle until the laptop sends one back.)
        let waiting = try await net.request("veld", "GET", "/v1/status").1["connectivity"]?["waiting"]?.arrayValue ?? []
        #expect(waiting.first { $0["name"] == "politie" }?["commits"] == 0, "\(waiting)")
        let again = try await raw(net, "veld", "GET", "/v1/bundle?peer=politie")
        #expect(again.status == 200 && again.headers.first { $0.name == "x-progsync-commits" }?.value == "0", "\(again.headers)")
    }

    // MARK: 3

    @Test func damagedBundleIsRefusedWhole() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        net.links = ["jenv": [], "politie": []]
        try net.start("jenv", sample: true)
        try net.start("politie")
        let bundle = try await exportBundle(net, "jenv", "all=true")
        #expect(bundle.count > 1000)
        let before = try await net.request("politie", "GET", "/v1/status").1

        var flipped = bundle
        flipped[bundle.count / 2] ^= 0x5A
        let damaged: [(String, [UInt8])] = [("truncated", Array(bundle.dropLast(10))), ("flipped", flipped)]
        for (what, bytes) in damaged {
            let (status, body) = try await importBundle(net, "politie", bytes)
            #expect(status == 422, "\(what): \(status) \(body)")
            #expect(body["error"] == "bad-bundle", "\(what): \(body)")
            let message = body["message"]?.stringValue ?? ""
            #expect(["truncated", "damaged", "altered"].contains { message.contains($0) }, "\(what): unclear message \(message)")
            let after = try await net.request("politie", "GET", "/v1/status").1
            #expect(after["digest"] == before["digest"] && after["versionVector"] == before["versionVector"], "\(what) bundle changed politie")
            #expect(after["records"] == before["records"])
        }
        // The CLI refuses a damaged file before sending it.
        let file = net.root + "/kapot.psb"
        try Data(bundle.dropLast(10)).write(to: URL(fileURLWithPath: file))
        let cli = try cli(["bundle", "import", "--socket", net.nodes["politie"]!.socket, file])
        #expect(cli.status != 0 && cli.output.contains("nothing was imported"), "\(cli)")
        #expect(try await net.request("politie", "GET", "/v1/status").1["digest"] == before["digest"])

        // The intact bundle applies whole.
        let (status, body) = try await importBundle(net, "politie", bundle)
        #expect(status == 200 && body["new"] == body["commits"], "\(body)")
        #expect(try await net.digest("politie") == net.digest("jenv"))
    }

    // MARK: 4

    @Test func repairAfterCorruption() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        // politie dials (jenv stands by), so its cursor in jenv's feed is its own and current:
        // after the restart below it pulls nothing twice, and only the repair can restore the
        // commit taken from its log. (Standing by, its cursor follows jenv's long polls, up to
        // one long poll behind: a pull after a restart could fetch the commit again.)
        net.nodes["politie"]!.environment["PROGSYNC_PEERS_CONNECT"] = "jenv"
        try net.start("jenv", sample: true)
        try net.start("politie")
        _ = try await net.waitForAgreement()
        var commits: [(origin: String, seq: Int64)] = []
        for (record, change) in [("al1.r01.a02", ["explanation": "Origineel"]), ("al1.r01.a03", ["status": "delayed"]),
                                 ("al1.r01.a04", ["status": "completed"])] as [(String, JSONValue)] {
            let (status, body) = try await net.request("jenv", "PATCH", "/v1/records/\(record)", change)
            #expect(status == 200)
            commits.append((body["commit"]?["origin"]?.stringValue ?? "", body["commit"]?["seq"]?.intValue ?? 0))
        }
        _ = try await net.waitForAgreement()

        // Behind the daemon's back: one winner changed, one commit gone from the log.
        net.stop("politie")
        let lost = commits[1]
        let script = """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            a = db.execute("UPDATE fields SET value = '\\"Vervalst\\"' WHERE record = 'al1.r01.a02' AND field = 'explanation'").rowcount
            b = db.execute("DELETE FROM commits WHERE origin = ? AND seq = ?", (sys.argv[2], int(sys.argv[3]))).rowcount
            db.commit()
            print(a, b)
            """
        let python = try PeerNetwork.run("/usr/bin/env", ["python3", "-c", script, net.nodes["politie"]!.folder + "/replica.sqlite", lost.origin, "\(lost.seq)"])
        try #require(python.status == 0 && python.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1 1", "python3/sqlite3: \(python.output)")
        try net.start("politie")
        let damaged = try await net.request("politie", "GET", "/v1/records/al1.r01.a02").1["fields"]?["explanation"]
        #expect(damaged == "Vervalst", "the corruption should be visible before the repair")
        func historyHasLost() async throws -> Bool {
            let history = try await net.request("politie", "GET", "/v1/records/al1.r01.a03/history").1["history"]?.arrayValue ?? []
            return history.contains { $0["origin"]?.stringValue == lost.origin && $0["seq"]?.intValue == lost.seq }
        }
        #expect(try await !historyHasLost())

        let (status, report) = try await net.request("politie", "POST", "/v1/reconcile")
        #expect(status == 200)
        #expect(report["verdict"] == "in agreement", "\(report)")
        #expect(report["reasons"] == [], "\(report)")
        let selfCheck = report["selfCheck"]
        #expect((selfCheck?["missingCommits"]?.intValue ?? 0) >= 1, "\(selfCheck ?? .null)")
        #expect((selfCheck?["commitsRestored"]?.intValue ?? 0) >= 1, "\(selfCheck ?? .null)")
        #expect((selfCheck?["divergedBuckets"]?.intValue ?? 0) >= 1, "\(selfCheck ?? .null)")
        #expect((selfCheck?["fieldsRepaired"]?.intValue ?? 0) >= 1, "\(selfCheck ?? .null)")
        #expect(selfCheck?["repairedExamples"]?.arrayValue?.contains("al1.r01.a02~explanation") == true, "\(selfCheck ?? .null)")
        let peers = report["peers"]?.arrayValue ?? []
        #expect(peers.count == 1 && peers.first?["verdict"] == "agree" && peers.first?["digestsEqual"] == true, "\(peers)")
        #expect(report["trigger"] == "manual")

        let repaired = try await net.request("politie", "GET", "/v1/records/al1.r01.a02").1["fields"]?["explanation"]
        #expect(repaired == "Origineel")
        #expect(try await historyHasLost(), "the deleted commit should be back in the log")
        let id = try #require(report["id"]?.stringValue)
        let (latestStatus, latest) = try await net.request("politie", "GET", "/v1/reconcile/reports/latest")
        #expect(latestStatus == 200 && latest["id"]?.stringValue == id && latest["verdict"] == "in agreement", "\(latest)")
        let listed = try await net.request("politie", "GET", "/v1/reconcile/reports").1["reports"]?.arrayValue ?? []
        #expect(listed.contains { $0["id"]?.stringValue == id && $0["trigger"] == "manual" }, "\(listed)")
        #expect(FileManager.default.fileExists(atPath: net.nodes["politie"]!.folder + "/reports/\(id).json"))
        _ = try await net.waitForAgreement()
        #expect(try await net.digest("politie") == net.digest("jenv"))
        // A second run finds nothing left to repair.
        let second = try await net.request("politie", "POST", "/v1/reconcile").1
        #expect(second["verdict"] == "in agreement" && second["selfCheck"]?["divergedBuckets"] == 0 && second["selfCheck"]?["missingCommits"] == 0,
                "\(second)")
    }

    // MARK: 5

    @Test func clockSkewIsQuarantined() async throws {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        let faketime = path.map { "\($0)/faketime" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        try #require(faketime != nil, "faketime is not installed: run scripts/setup.sh --test (or apt-get install faketime); this test needs it")
        let net = try PeerNetwork([("jenv", "jenv"), ("snel", "politie")])
        defer { net.tearDown() }
        // Not FAKETIME_DONT_FAKE_MONOTONIC=1: with libfaketime 0.9.10 it makes the daemon spin a
        // core (a dispatch thread's timed waits mix the faked and the real clock). Shifting the
        // monotonic clock by a constant hour is harmless: timers are relative.
        net.nodes["snel"]!.launchPrefix = ["faketime", "-f", "+1h"]
        try net.start("jenv", sample: true)
        try net.start("snel")
        _ = try await net.waitForAgreement()
        let snelID = net.nodes["snel"]!.id

        // The node an hour ahead writes: its stamp says so.
        let (created, body) = try await net.request("snel", "PUT", "/v1/records/snel.1", [
            "kind": "activity", "result": "al1.r01", "number": 901, "title": "Snel", "explanation": "snel 1",
        ])
        try #require(created == 201, "\(body)")
        let stamp = try #require(Self.milliseconds(ofStamp: body["commit"]?["stamp"]?.stringValue))
        let ahead = Double(stamp) / 1000 - Date().timeIntervalSince1970
        try #require(ahead > 3500 && ahead < 3700, "snel's commit is \(Int(ahead)) s ahead, not ~3600: faketime does not shift the daemon's clock")

        // jenv holds it: not applied, clock unmoved.
        func held(seq: Int64) async throws -> JSONValue? {
            let list = try await net.request("jenv", "GET", "/v1/quarantine").1["held"]?.arrayValue ?? []
            return list.first { $0["origin"]?.stringValue == snelID && $0["seq"]?.intValue == seq }
        }
        #expect(try await eventually(15) { try await held(seq: 1) != nil }, "jenv should hold snel's commit")
        let entry = try #require(try await held(seq: 1))
        #expect(entry["reason"] == "clock-ahead", "\(entry)")
        let status = try await net.request("jenv", "GET", "/v1/status").1
        #expect(status["held"] == 1, "\(status)")
        let clock = try #require(Self.milliseconds(ofStamp: status["clock"]?.stringValue))
        #expect(clock <= Self.nowMs() + 2000, "jenv's clock jumped ahead: \(status["time"] ?? .null)")
        #expect(try await net.request("jenv", "GET", "/v1/records/snel.1").0 == 404, "a held commit must not be applied")

        // An operator releases it: applied; the clock follows at most max-offset.
        let hash = try #require(entry["hash"]?.stringValue)
        let (releaseStatus, released) = try await net.request("jenv", "POST", "/v1/quarantine/\(hash)/release")
        #expect(releaseStatus == 200 && released["applied"] == 1, "\(released)")
        #expect(try await net.request("jenv", "GET", "/v1/records/snel.1").1["fields"]?["explanation"] == "snel 1")
        let afterRelease = try await net.request("jenv", "GET", "/v1/status").1
        let clock2 = try #require(Self.milliseconds(ofStamp: afterRelease["clock"]?.stringValue))
        #expect(clock2 <= Self.nowMs() + 300_000 + 2000, "jenv's clock went past the 5 min guard: \(afterRelease["time"] ?? .null)")
        #expect(afterRelease["held"] == 0)

        // jenv's later edit of the same field wins although its stamp is lower: it saw snel's.
        let (patched, edit) = try await net.request("jenv", "PATCH", "/v1/records/snel.1", ["explanation": "jenv na vrijgave"])
        #expect(patched == 200)
        let jenvStamp = try #require(Self.milliseconds(ofStamp: edit["commit"]?["stamp"]?.stringValue))
        #expect(jenvStamp < stamp, "jenv's stamp should stay behind snel's")
        #expect(try await net.request("jenv", "GET", "/v1/records/snel.1").1["fields"]?["explanation"] == "jenv na vrijgave")
        let conflicts = try #require(try await net.request("jenv", "GET", "/v1/conflicts").1["conflicts"]?.arrayValue)
        #expect(conflicts.isEmpty, "\(conflicts)")

        // snel's next commit is ahead again: held, until jenv is configured to allow 2 h.
        let (patched2, _) = try await net.request("snel", "PATCH", "/v1/records/snel.1", ["status": "delayed"])
        #expect(patched2 == 200)
        #expect(try await eventually(15) { try await held(seq: 2)?["reason"] == "clock-ahead" }, "jenv should hold snel's second commit")
        net.stop("jenv")
        net.nodes["jenv"]!.environment["PROGSYNC_CLOCK_MAX_OFFSET_SECONDS"] = "7200"
        try net.start("jenv", sample: true)
        _ = try await net.waitForAgreement(timeout: 30)  // the held commit is retried every 10 s
        for name in net.order {
            let fields = try await net.request(name, "GET", "/v1/records/snel.1").1["fields"]
            #expect(fields?["explanation"] == "jenv na vrijgave" && fields?["status"] == "delayed", "\(name): \(fields ?? .null)")
            #expect(try await net.request(name, "GET", "/v1/status").1["held"] == 0)
        }
    }

    /// `faketime` runs the daemon as its child and does not pass signals on, so stopping the
    /// wrapper would orphan the daemon (and `waitUntilExit` waits on it for ever): stop the
    /// daemon itself; faketime exits with it.
    // MARK: 6

    @Test func missedScheduledRunIsCaughtUp() async throws {
        let net = try PeerNetwork([("jenv", "jenv")])
        defer { net.tearDown() }
        net.nodes["jenv"]!.environment["PROGSYNC_RECONCILE_SCHEDULE"] = "off"
        try net.start("jenv", sample: true)
        let (status, real) = try await net.request("jenv", "POST", "/v1/reconcile")
        #expect(status == 200)
        let id = try #require(real["id"]?.stringValue)
        net.stop("jenv")

        // That run is made two days old.
        let reports = net.nodes["jenv"]!.folder + "/reports"
        let old = Self.nowMs() - 2 * 86_400_000
        let oldID = "r" + Stamp.iso8601(milliseconds: old).replacingOccurrences(of: ":", with: "").replacingOccurrences(of: "-", with: "")
            .replacingOccurrences(of: ".", with: "")
        guard case .object(var o) = try JSONParser.parse([UInt8](try #require(FileManager.default.contents(atPath: "\(reports)/\(id).json")))) else {
            Issue.record("report \(id) is not an object")
            return
        }
        o["startedMs"] = .int(Int64(old))
        o["started"] = .string(Stamp.iso8601(milliseconds: old))
        o["finished"] = .string(Stamp.iso8601(milliseconds: old + 100))
        o["id"] = .string(oldID)
        try (JSONValue.object(o).prettyString() + "\n").write(toFile: "\(reports)/\(oldID).json", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: "\(reports)/\(id).json")

        // Scheduled two minutes ago, local time; the node was down then.
        let due = Date().addingTimeInterval(-120)
        let parts = Calendar.current.dateComponents([.hour, .minute], from: due)
        net.nodes["jenv"]!.environment["PROGSYNC_RECONCILE_SCHEDULE"] = String(format: "%02d:%02d", parts.hour!, parts.minute!)
        let restarted = Self.nowMs()
        try net.start("jenv", sample: true)
        var caughtUp: JSONValue?
        _ = try await eventually(15) {
            let list = try await net.request("jenv", "GET", "/v1/reconcile/reports").1["reports"]?.arrayValue ?? []
            caughtUp = list.first { $0["trigger"] == "catch-up" }
            return caughtUp != nil
        }
        let list = try await net.request("jenv", "GET", "/v1/reconcile/reports").1["reports"]?.arrayValue ?? []
        let found = try #require(caughtUp, "no catch-up run within 15 s of the restart: \(list); log: \(net.log("jenv").suffix(1500))")
        #expect(list.count == 2 && list.contains { $0["id"]?.stringValue == oldID }, "\(list)")
        let report = try await net.request("jenv", "GET", "/v1/reconcile/reports/\(found["id"]?.stringValue ?? "")").1
        #expect(UInt64(report["startedMs"]?.intValue ?? 0) >= restarted, "\(report)")
        #expect(net.log("jenv").contains("catching up a reconciliation"))
    }
}
