import Foundation
import ProgSyncCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every route of the local API against one real daemon holding the 2021 programme. Tests that
/// write use record ids of their own (under result `e2e.*`), so the sample's counts stay true.
@Suite(.serialized, .sharedDaemon())
struct LocalAPITests {
    // MARK: Status and reading

    @Test func status() async throws {
        let d = try sharedDaemon()
        let status = try await d.get("/v1/status")
        #expect(status["node"]?.stringValue?.count == 16)
        #expect(status["org"]?.stringValue == "jenv")
        #expect(status["records"]?["action-line"]?.intValue == 5)
        #expect(status["records"]?["result"]?.intValue == 34)
        #expect((status["records"]?["activity"]?.intValue ?? 0) >= 122)
        #expect(status["conflicts"]?.intValue == 0)
        #expect(status["held"]?.intValue == 0)
        #expect(status["digest"]?.stringValue?.count == 64)
        #expect(status["clock"]?.stringValue != nil)
        #expect(status["versionVector"]?.objectValue?.count == 1)
        let reply = try await d.request("GET", "/v1/status")
        #expect(reply.contentType.hasPrefix("application/json"))
    }

    @Test func listByKind() async throws {
        let d = try sharedDaemon()
        let lines = try await d.get("/v1/records?kind=action-line")
        #expect(lines["total"]?.intValue == 5)
        #expect(lines["records"]?.strings("id") == ["al1", "al2", "al3", "al4", "al5"])
        #expect(lines["records"]?.arrayValue?.allSatisfy { $0["fields"]?["kind"]?.stringValue == "action-line" } == true)
        #expect(try await d.count("kind=result") == 34)
        let bad = try await d.request("GET", "/v1/records?kind=bogus")
        #expect(bad.status == 400 && bad.isErrorShape, "\(bad)")
    }

    @Test func listByStatusOwnerResultActionLine() async throws {
        let d = try sharedDaemon()
        let delayed = Sample.count { $0["status"]?.stringValue == "delayed" }
        let completed = Sample.count { $0["status"]?.stringValue == "completed" }
        #expect(try await d.count("status=delayed") == delayed)
        #expect(try await d.count("status=completed") == completed)
        // Labels and symbols are accepted as filters too.
        #expect(try await d.count("status=In%20uitvoering%20maar%20met%20vertraging") == delayed)
        #expect(try await d.count("status=Voltooid") == completed)
        let badStatus = try await d.request("GET", "/v1/records?status=klaar")
        #expect(badStatus.status == 400 && badStatus.isErrorShape, "\(badStatus)")

        let politie = Sample.count { $0["owner"]?.stringValue == "politie" }
        #expect(politie > 0)
        #expect(try await d.count("owner=politie") == politie)
        let comensha = try await d.get("/v1/records?owner=comensha&limit=1000")
        #expect(comensha["records"]?.arrayValue?.allSatisfy { $0["fields"]?["owner"]?.stringValue == "comensha" } == true)

        let r01 = Sample.count { $0["result"]?.stringValue == "al1.r01" }
        let page = try await d.get("/v1/records?result=al1.r01&limit=1000")
        #expect(page["total"]?.intValue.map(Int.init) == r01)
        #expect(page["records"]?.arrayValue?.allSatisfy { $0["fields"]?["result"]?.stringValue == "al1.r01" } == true)
        #expect(page["records"]?.strings("id").contains("al1.r01.a01") == true)

        let al1 = Sample.count { $0["actionLine"]?.stringValue == "al1" }
        #expect(try await d.count("actionLine=al1") == al1)
        #expect(try await d.count("kind=activity&result=al1.r01&owner=nobody") == 0)
    }

    @Test func listByText() async throws {
        let d = try sharedDaemon()
        let expected = Sample.count { r in
            ["title", "explanation", "theme"].contains { (r[$0]?.stringValue ?? "").lowercased().contains("training") }
        }
        #expect(expected > 0)
        #expect(try await d.count("q=training") == expected)
        #expect(try await d.count("q=TRAINING") == expected)
        // LIKE wildcards are taken literally.
        #expect(try await d.count("q=%25") == Sample.count { r in
            ["title", "explanation", "theme"].contains { (r[$0]?.stringValue ?? "").contains("%") }
        })
        #expect(try await d.count("q=zzzz-nothing-matches") == 0)
    }

    /// `q` matches the field's text, not its stored canonical JSON (Replica+Queries.swift,
    /// `recordIDs`): otherwise `q="` matches every record (the quotes around each string), `q=\`
    /// every text with a newline or a quote (escaped `\n`, `\"`), and the two characters `\n`
    /// typed by a user match line breaks.
    @Test func textSearchMatchesTheTextNotItsJSONEncoding() async throws {
        let d = try sharedDaemon()
        func containing(_ needle: String) -> Int {
            Sample.count { r in ["title", "explanation", "theme"].contains { (r[$0]?.stringValue ?? "").contains(needle) } }
        }
        #expect(try await d.count("q=%22") == containing("\""), "q=\" (a double quote)")
        #expect(try await d.count("q=%5C") == containing("\\"), "q=\\ (a backslash)")
        #expect(try await d.count("q=%5Cn") == containing("\\n"), "q=\\n (backslash, n)")
    }

    /// Path parameters are percent-decoded before `ProgrammeSchema.isValidRecordID`: a client that
    /// encodes the id as a path segment — JavaScript's encodeURIComponent("x:y") == "x%3Ay", or
    /// Python's quote(id, safe="") — reaches a record that exists instead of a 400.
    @Test func percentEncodedIDsAreDecoded() async throws {
        let d = try sharedDaemon()
        let created = try await d.request("PUT", "/v1/records/e2e:colon", body: [
            "kind": "activity", "result": "e2e.colon", "number": 1, "title": "E2E dubbele punt",
        ])
        #expect(created.status == 201, "\(created)")
        let encodedColon = try await d.request("GET", "/v1/records/e2e%3Acolon")
        #expect(encodedColon.status == 200 && encodedColon.json["id"]?.stringValue == "e2e:colon", "\(encodedColon)")
        let encodedDots = try await d.request("GET", "/v1/records/al1%2Er01%2Ea01")
        #expect(encodedDots.status == 200 && encodedDots.json["id"]?.stringValue == "al1.r01.a01", "\(encodedDots)")
    }

    @Test func limitOffsetTotal() async throws {
        let d = try sharedDaemon()
        let all = try await d.get("/v1/records?kind=result&limit=1000")
        let ids = all["records"]?.strings("id") ?? []
        #expect(ids.count == 34)
        #expect(ids == ids.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }, "records come in id order")
        let page = try await d.get("/v1/records?kind=result&limit=10&offset=5")
        #expect(page["total"]?.intValue == 34)
        #expect(page["limit"]?.intValue == 10)
        #expect(page["offset"]?.intValue == 5)
        #expect(page["records"]?.strings("id") == Array(ids[5..<15]))
        let tail = try await d.get("/v1/records?kind=result&limit=10&offset=30")
        #expect(tail["records"]?.strings("id") == Array(ids[30...]))
        let past = try await d.get("/v1/records?kind=result&offset=100")
        #expect(past["records"]?.arrayValue?.isEmpty == true && past["total"]?.intValue == 34)
        let byDefault = try await d.get("/v1/records")
        #expect(byDefault["limit"]?.intValue == 100 && byDefault["records"]?.arrayValue?.count == 100)
        for bad in ["limit=0", "limit=1001", "limit=abc", "offset=-1", "offset=x", "deleted=maybe"] {
            let reply = try await d.request("GET", "/v1/records?" + bad)
            #expect(reply.status == 400 && reply.isErrorShape, "\(bad): \(reply)")
        }
    }

    @Test func getRecord() async throws {
        let d = try sharedDaemon()
        let record = try await d.get("/v1/records/al1.r01.a01")
        #expect(record["id"]?.stringValue == "al1.r01.a01")
        #expect(record["fields"]?["title"]?.stringValue == "Training politie-medewerkers")
        #expect(record["fields"]?["kind"]?.stringValue == "activity")
        #expect(record["fields"]?["result"]?.stringValue == "al1.r01")
        #expect(record["fields"]?["number"]?.intValue == 1)
        #expect(record["fields"]?["partners"] == ["politie"])
        #expect(record["updated"]?.stringValue?.hasSuffix("Z") == true)
        let title = record["versions"]?["title"]
        #expect(title?["author"]?.stringValue == "progsyncd")
        #expect(title?["org"]?.stringValue == "jenv")
        #expect(title?["stamp"]?.stringValue?.count == 16)
        let missing = try await d.request("GET", "/v1/records/no.such.record")
        #expect(missing.status == 404 && missing.json["error"]?.stringValue == "not-found", "\(missing)")
        #expect(missing.json["message"]?.stringValue?.contains("no.such.record") == true)
    }

    // MARK: Writing

    @Test func putCreatesAndNamesMissingFields() async throws {
        let d = try sharedDaemon()
        let before = try await d.digestRoot()
        let noTitle = try await d.request("PUT", "/v1/records/e2e.put.a01", body: [
            "kind": "activity", "result": "e2e.put", "number": 1,
        ])
        #expect(noTitle.status == 422 && noTitle.isErrorShape, "\(noTitle)")
        #expect(noTitle.json["message"]?.stringValue?.contains("title") == true, "\(noTitle)")
        let noKind = try await d.request("PUT", "/v1/records/e2e.put.a01", body: ["title": "Zonder soort"])
        #expect(noKind.status == 422 && noKind.json["message"]?.stringValue?.contains("kind") == true, "\(noKind)")
        let noResult = try await d.request("PUT", "/v1/records/e2e.put.a01", body: [
            "kind": "activity", "number": 1, "title": "Zonder resultaat",
        ])
        #expect(noResult.status == 422 && noResult.json["message"]?.stringValue?.contains("result") == true, "\(noResult)")
        #expect(try await d.digestRoot() == before, "a refused PUT changed the replica")

        let created = try await d.request("PUT", "/v1/records/e2e.put.a01", body: [
            "kind": "activity", "result": "e2e.put", "number": 1, "title": "E2E aangemaakt",
            "status": "Nog niet in uitvoering", "partners": ["om", "politie"],
        ])
        #expect(created.status == 201, "\(created)")
        #expect(created.json["created"] == true)
        #expect(created.json["record"]?["id"]?.stringValue == "e2e.put.a01")
        #expect(created.json["record"]?["fields"]?["status"]?.stringValue == "not-started", "labels are stored as codes")
        #expect(created.json["record"]?["fields"]?["owner"]?.stringValue == "jenv", "owner defaults to the node's org")
        #expect(created.json["commit"]?["seq"]?.intValue != nil)
        #expect(created.json["commit"]?["origin"]?.stringValue?.count == 16)

        let again = try await d.request("PUT", "/v1/records/e2e.put.a01", body: ["title": "E2E bijgewerkt"])
        #expect(again.status == 200 && again.json["created"] == false, "\(again)")
        let record = try await d.get("/v1/records/e2e.put.a01")
        #expect(record["fields"]?["title"]?.stringValue == "E2E bijgewerkt")
        #expect(record["fields"]?["number"]?.intValue == 1)
        #expect(record["versions"]?["title"]?["author"]?.stringValue == "root", "the author is the Unix user (SO_PEERCRED)")
    }

    @Test func patchUpdatesOrAnswers404() async throws {
        let d = try sharedDaemon()
        let before = try await d.digestRoot()
        let missing = try await d.request("PATCH", "/v1/records/e2e.nothing.here", body: ["title": "x"])
        #expect(missing.status == 404 && missing.json["error"]?.stringValue == "not-found", "\(missing)")
        #expect(try await d.digestRoot() == before)

        _ = try await d.request("PUT", "/v1/records/e2e.patch.a01", body: [
            "kind": "activity", "result": "e2e.patch", "number": 1, "title": "E2E patch",
        ])
        let patched = try await d.request("PATCH", "/v1/records/e2e.patch.a01", body: [
            "status": "📅⌚", "due": "2025-06-30", "explanation": "Vertraagd door de zomer.",
        ])
        #expect(patched.status == 200 && patched.json["created"] == false, "\(patched)")
        let fields = patched.json["record"]?["fields"]
        #expect(fields?["status"]?.stringValue == "delayed")
        #expect(fields?["due"]?.stringValue == "2025-06-30")
        #expect(fields?["title"]?.stringValue == "E2E patch")
        // null clears a field.
        let cleared = try await d.request("PATCH", "/v1/records/e2e.patch.a01", body: ["due": nil])
        #expect(cleared.status == 200 && cleared.json["record"]?["fields"]?["due"] == nil, "\(cleared)")
    }

    @Test func concurrentWritesShareCommitsButEachIsItsOwnCommit() async throws {
        let d = try sharedDaemon()
        for i in 0..<8 {
            _ = try await d.request("PUT", "/v1/records/e2e.group.a0\(i)", body: [
                "kind": "activity", "result": "e2e.group", "number": .int(Int64(i + 1)), "title": "E2E groep",
            ])
        }
        // 48 writes at once: the daemon commits them in groups; a refused one among them stays alone.
        let replies = try await withThrowingTaskGroup(of: (Int, Reply).self) { group in
            for n in 0..<48 {
                group.addTask {
                    let body: JSONValue = n == 17 ? ["status": "bijna klaar"] : ["explanation": .string("versie \(n)"), "number": .int(Int64(n + 1))]
                    return (n, try await d.request("PATCH", "/v1/records/e2e.group.a0\(n % 8)", body: body))
                }
            }
            return try await group.reduce(into: [Int: Reply]()) { $0[$1.0] = $1.1 }
        }
        #expect(replies[17]?.status == 422, "\(String(describing: replies[17]))")
        let accepted = replies.filter { $0.key != 17 }
        #expect(accepted.values.allSatisfy { $0.status == 200 }, "\(accepted.values.filter { $0.status != 200 }.prefix(3))")
        let seqs = Set(accepted.values.compactMap { $0.json["commit"]?["seq"]?.intValue })
        #expect(seqs.count == 47, "every acknowledged write is its own commit")
        // The last write per record wins, by commit order; the answer is canonical JSON.
        for i in 0..<8 {
            let mine = accepted.filter { $0.key % 8 == i }.max { ($0.value.json["commit"]?["seq"]?.intValue ?? 0) < ($1.value.json["commit"]?["seq"]?.intValue ?? 0) }!
            let reply = try await d.request("GET", "/v1/records/e2e.group.a0\(i)")
            #expect(reply.json["fields"]?["explanation"]?.stringValue == "versie \(mine.key)")
            #expect(reply.body == reply.json.canonicalBytes + [0x0A], "the record answer is canonical JSON")
        }
    }

    @Test func deleteHidesFromListButNotFromIncludeDeleted() async throws {
        let d = try sharedDaemon()
        for n in 1...3 {
            let reply = try await d.request("PUT", "/v1/records/e2e.del.a0\(n)", body: [
                "kind": "activity", "result": "e2e.del", "number": .int(Int64(n)), "title": "E2E weg",
            ])
            #expect(reply.status == 201, "\(reply)")
        }
        #expect(try await d.count("result=e2e.del") == 3)
        let deleted = try await d.request("DELETE", "/v1/records/e2e.del.a02")
        #expect(deleted.status == 200 && deleted.json["record"]?["fields"]?["deleted"] == true, "\(deleted)")
        let visible = try await d.get("/v1/records?result=e2e.del")
        #expect(visible["records"]?.strings("id") == ["e2e.del.a01", "e2e.del.a03"])
        #expect(visible["total"]?.intValue == 2)
        let included = try await d.get("/v1/records?result=e2e.del&deleted=include")
        #expect(included["records"]?.strings("id") == ["e2e.del.a01", "e2e.del.a02", "e2e.del.a03"])
        let only = try await d.get("/v1/records?result=e2e.del&deleted=only")
        #expect(only["records"]?.strings("id") == ["e2e.del.a02"])
        // The record itself can still be read, marked deleted, and undeleted.
        let record = try await d.get("/v1/records/e2e.del.a02")
        #expect(record["fields"]?["deleted"] == true)
        let status = try await d.get("/v1/status")
        #expect((status["records"]?["deleted"]?.intValue ?? 0) >= 1)
        let undo = try await d.request("PATCH", "/v1/records/e2e.del.a02", body: ["deleted": false])
        #expect(undo.status == 200, "\(undo)")
        #expect(try await d.count("result=e2e.del") == 3)
        let missing = try await d.request("DELETE", "/v1/records/e2e.del.a99")
        #expect(missing.status == 404 && missing.isErrorShape, "\(missing)")
    }

    @Test func historyNamesTheAuthorAndChanges() async throws {
        let d = try sharedDaemon()
        _ = try await d.request("PUT", "/v1/records/e2e.hist.a01", body: [
            "kind": "activity", "result": "e2e.hist", "number": 1, "title": "E2E historie",
        ])
        _ = try await d.request("PATCH", "/v1/records/e2e.hist.a01", body: ["status": "completed"])
        let history = try await d.get("/v1/records/e2e.hist.a01/history")
        #expect(history["id"]?.stringValue == "e2e.hist.a01")
        let entries = history["history"]?.arrayValue ?? []
        #expect(entries.count == 2, "\(history)")
        #expect(entries.allSatisfy { $0["author"]?.stringValue == "root" }, "\(entries)")
        #expect(entries.allSatisfy { $0["org"]?.stringValue == "jenv" && $0["origin"]?.stringValue?.count == 16 })
        let changes = entries.flatMap { $0["changes"]?.arrayValue ?? [] }
        #expect(changes.contains { $0["field"]?.stringValue == "status" && $0["value"]?.stringValue == "completed" }, "\(changes)")
        #expect(changes.contains { $0["field"]?.stringValue == "title" && $0["value"]?.stringValue == "E2E historie" })
        let seqs = entries.compactMap { $0["seq"]?.intValue }
        #expect(seqs.count == 2 && seqs[0] != seqs[1])
        let sample = try await d.get("/v1/records/al1.r01.a01/history")
        #expect(sample["history"]?.arrayValue?.first?["author"]?.stringValue == "progsyncd")
        let missing = try await d.request("GET", "/v1/records/e2e.hist.none/history")
        #expect(missing.status == 404 && missing.isErrorShape, "\(missing)")
    }

    // MARK: Conflicts, quarantine, digest

    @Test func conflictsAndQuarantineAreEmptyOnOneNode() async throws {
        let d = try sharedDaemon()
        let conflicts = try await d.get("/v1/conflicts")
        #expect(conflicts["conflicts"] == [])
        let before = try await d.digestRoot()
        let resolve = try await d.request("POST", "/v1/conflicts/al1.r01.a01~status/resolve", body: ["pick": 0])
        #expect(resolve.status == 404 && resolve.json["error"]?.stringValue == "not-found", "\(resolve)")
        let noTilde = try await d.request("POST", "/v1/conflicts/al1.r01.a01/resolve", body: ["pick": 0])
        #expect(noTilde.status == 400 && noTilde.isErrorShape, "\(noTilde)")

        let held = try await d.get("/v1/quarantine")
        #expect(held["held"] == [])
        let zeros = String(repeating: "0", count: 64)
        let release = try await d.request("POST", "/v1/quarantine/\(zeros)/release")
        #expect(release.status == 404 && release.isErrorShape, "\(release)")
        let badHash = try await d.request("POST", "/v1/quarantine/xyz/release")
        #expect(badHash.status == 400 && badHash.isErrorShape, "\(badHash)")
        #expect(try await d.digestRoot() == before)
    }

    @Test func digestChangesWithAWrite() async throws {
        let d = try sharedDaemon()
        let digest = try await d.get("/v1/digest")
        let root = try #require(digest["root"]?.stringValue)
        #expect(root.count == 64 && root.allSatisfy(\.isHexDigit))
        #expect(digest["inner"]?.arrayValue?.count == 64)
        #expect(digest["inner"]?.arrayValue?.allSatisfy { $0.stringValue?.count == 64 } == true)
        #expect((digest["fields"]?.intValue ?? 0) > 0)
        #expect(try await d.get("/v1/status")["digest"]?.stringValue == root)
        #expect(try await d.digestRoot() == root, "reading does not change the digest")

        let write = try await d.request("PUT", "/v1/records/e2e.digest.a01", body: [
            "kind": "activity", "result": "e2e.digest", "number": 1, "title": "E2E digest",
        ])
        #expect(write.status == 201)
        let after = try await d.get("/v1/digest")
        #expect(after["root"]?.stringValue != root)
        #expect(after["fields"]?.intValue != digest["fields"]?.intValue)
        #expect(try await d.get("/v1/status")["digest"] == after["root"])
    }

    // MARK: Import

    @Test func importCounts() async throws {
        let d = try sharedDaemon()
        let records: [JSONValue] = (1...3).map { activity("e2e.imp.a0\($0)", result: "e2e.imp", number: $0) }
        let reply = try await d.request("POST", "/v1/import", body: ["records": .array(records)])
        #expect(reply.status == 200, "\(reply)")
        #expect(reply.json["records"]?.intValue == 3)
        #expect(reply.json["commits"]?.intValue == 1)
        // 4 fields each plus the default owner.
        #expect(reply.json["changes"]?.intValue == 15)
        #expect(try await d.count("result=e2e.imp") == 3)
        // A bare array works too, and updates what is there.
        let bare = try await d.request("POST", "/v1/import", body: [
            ["id": "e2e.imp.a01", "status": "ongoing"],
        ])
        #expect(bare.status == 200 && bare.json["records"]?.intValue == 1, "\(bare)")
        #expect(try await d.get("/v1/records/e2e.imp.a01")["fields"]?["status"]?.stringValue == "ongoing")
        let history = try await d.get("/v1/records/e2e.imp.a01/history")
        #expect(history["history"]?.arrayValue?.last?["author"]?.stringValue == "root")
    }

    @Test func importIsAllOrNothing() async throws {
        let d = try sharedDaemon()
        let before = try await d.digestRoot()
        var records: [JSONValue] = (1...100).map { activity("e2e.aon.a\($0)", result: "e2e.aon", number: $0) }
        records[73] = .object([
            "id": "e2e.aon.a74", "kind": "activity", "result": "e2e.aon", "number": 74, "title": "fout",
            "status": "klaar",
        ])
        let reply = try await d.request("POST", "/v1/import", body: ["records": .array(records)])
        #expect(reply.status == 422 && reply.isErrorShape, "\(reply)")
        #expect(reply.json["message"]?.stringValue?.contains("73") == true, "names the record: \(reply)")
        #expect(reply.json["message"]?.stringValue?.contains("status") == true, "names the field: \(reply)")
        #expect(try await d.count("result=e2e.aon") == 0)
        #expect(try await d.request("GET", "/v1/records/e2e.aon.a1").status == 404)
        #expect(try await d.digestRoot() == before)

        var duplicated = Array(records.prefix(10))
        duplicated[5] = activity("e2e.aon.a1", result: "e2e.aon", number: 1)
        let twice = try await d.request("POST", "/v1/import", body: ["records": .array(duplicated)])
        #expect(twice.status == 422 && twice.json["message"]?.stringValue?.contains("twice") == true, "\(twice)")
        #expect(try await d.digestRoot() == before)
    }

    // MARK: Events

    @Test func eventsStreamCommits() async throws {
        let d = try sharedDaemon()
        _ = try await d.request("PUT", "/v1/records/e2e.evt.a01", body: [
            "kind": "activity", "result": "e2e.evt", "number": 1, "title": "E2E gebeurtenis",
        ])
        let output = d.folder.appendingPathComponent("events-\(UUID().uuidString.prefix(8)).txt")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: Binaries.curl)
        curl.arguments = ["-sS", "-N", "--unix-socket", d.socketPath, "http://localhost/v1/events"]
        let handle = try FileHandle(forWritingTo: output)
        curl.standardOutput = handle
        curl.standardError = FileHandle.nullDevice
        try curl.run()
        defer {
            if curl.isRunning { kill(curl.processIdentifier, SIGKILL) }
            curl.waitUntilExit()
            try? handle.close()
        }
        func received() -> String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }
        let subscribed = await eventually(timeout: 10) { received().contains(": progsync events") }
        #expect(subscribed, "the stream did not open: \(received())")

        let patch = try await d.request("PATCH", "/v1/records/e2e.evt.a01", body: ["status": "on-track"])
        #expect(patch.status == 200)
        let sent = Date()
        let seen = await eventually(timeout: 2) {
            let text = received()
            return text.contains("event: commit") && text.contains("e2e.evt.a01") && text.contains("on-track")
        }
        #expect(seen, "no commit event within 2 s: \(received())")
        print("events: commit event seen \(Int(Date().timeIntervalSince(sent) * 1000)) ms after the PATCH")
        let text = received()
        let dataLine = try #require(text.split(separator: "\n").first { $0.hasPrefix("data: ") && $0.contains("e2e.evt.a01") }, "\(text)")
        let event = try JSONParser.parse(String(dataLine.dropFirst(6)))
        #expect(event["author"]?.stringValue == "root")
        #expect(event["changes"]?.arrayValue?.contains {
            $0["record"]?.stringValue == "e2e.evt.a01" && $0["field"]?.stringValue == "status"
        } == true)
        #expect(text.contains("id: "))
    }
}
