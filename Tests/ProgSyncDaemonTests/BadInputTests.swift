import Foundation
import ProgSyncCore
import Testing

/// Hostile input (§14): every bad request gets a 4xx with `{"error", "message"}`, and nothing
/// changes — the replica digest and the record counts are the same afterwards.
@Suite(.serialized, .sharedDaemon())
struct BadInputTests {
    struct BadCase: Sendable, CustomStringConvertible {
        var name: String
        var method: String
        var path: String
        var body: [UInt8]?
        /// The exact status expected, when the contract names one; otherwise any 4xx.
        var status: Int?
        /// A word the message should contain.
        var mentions: String?

        var description: String { "\(name): \(method) \(path.prefix(80))" }
    }

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// `[[[…]]]` nested `depth` deep.
    static func nested(_ depth: Int) -> String {
        String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
    }

    /// A JSON text with raw 0xFF 0xFE bytes inside a string.
    static func invalidUTF8(prefix: String, suffix: String) -> [UInt8] {
        Array(prefix.utf8) + [0x61, 0xFF, 0xFE, 0x62] + Array(suffix.utf8)
    }

    static let existing = "/v1/records/al1.r01.a01"
    static let new = "/v1/records/e2e.bad.new"
    static let longID = String(repeating: "a", count: 200)

    /// One import body with `record` as its second record.
    static func importBody(_ record: String) -> [UInt8] {
        bytes(#"{"records": [{"id": "e2e.bad.imp1", "kind": "activity", "result": "al1.r01", "number": 90, "title": "ok"}, "#
            + record + "]}")
    }

    /// Bad bodies for a record write (PUT new, PUT existing, PATCH existing).
    static let recordBodies: [(name: String, body: [UInt8], status: Int?, mentions: String?)] = [
        ("malformed JSON", bytes(#"{"title": "x""#), 400, "JSON"),
        ("malformed JSON: trailing data", bytes(#"{"title": "x"} {}"#), 400, "JSON"),
        ("malformed JSON: single quotes", bytes(#"{'title': 'x'}"#), 400, "JSON"),
        ("empty body", [], 400, nil),
        ("duplicate key", bytes(#"{"title": "a", "title": "b"}"#), 400, nil),
        ("lone surrogate", bytes(#"{"title": "\ud800"}"#), 400, nil),
        ("control character in string", bytes("{\"title\": \"a\u{01}b\"}"), 400, nil),
        ("number out of range", bytes(#"{"number": 1e400}"#), 400, nil),
        ("wrong type: number as text", bytes(#"{"kind": "activity", "result": "al1.r01", "number": "drie", "title": "x"}"#), 422, "number"),
        ("wrong type: fraction", bytes(#"{"kind": "activity", "result": "al1.r01", "number": 1.5, "title": "x"}"#), 422, "number"),
        ("wrong type: title as number", bytes(#"{"title": 5}"#), 422, "title"),
        ("wrong type: partners as text", bytes(#"{"partners": "om"}"#), 422, "partners"),
        ("wrong type: deleted as text", bytes(#"{"deleted": "yes"}"#), 422, "deleted"),
        ("wrong type: due not a date", bytes(#"{"due": "31-12-2025"}"#), 422, "due"),
        ("wrong type: owner not an org code", bytes(#"{"owner": "Politie Nederland"}"#), 422, "owner"),
        ("wrong type: body is an array", bytes(#"[{"title": "x"}]"#), 400, nil),
        ("wrong type: body is a string", bytes(#""title""#), 400, nil),
        ("wrong type: body is null", bytes("null"), 400, nil),
        ("no fields", bytes("{}"), 400, nil),
        ("unknown status", bytes(#"{"status": "klaar"}"#), 422, "status"),
        ("unknown field", bytes(#"{"colour": "rood"}"#), 422, "colour"),
        ("unknown kind", bytes(#"{"kind": "task", "title": "x"}"#), 422, "kind"),
        ("value larger than 16 KiB", bytes(#"{"explanation": ""# + String(repeating: "x", count: 17 * 1024) + #""}"#), 422, nil),
        ("depth 1000", bytes(#"{"links": "# + nested(1000) + "}"), 400, "deep"),
        ("depth 1000 bare", bytes(nested(1000)), 400, "deep"),
        ("invalid UTF-8 in a value", invalidUTF8(prefix: #"{"title": ""#, suffix: #""}"#), 400, "UTF-8"),
        ("invalid UTF-8 in a key", invalidUTF8(prefix: #"{""#, suffix: #"": "x"}"#), 400, "UTF-8"),
        ("oversize body (> 1 MiB)", bytes(#"{"explanation": ""# + String(repeating: "x", count: (1 << 20) + 10) + #""}"#), 413, nil),
    ]

    /// Bad bodies for POST /v1/import.
    static let importBodies: [(name: String, body: [UInt8], status: Int?, mentions: String?)] = [
        ("malformed JSON", bytes(#"{"records": [{"id": "e2e.bad.imp1", "#), 400, "JSON"),
        ("empty body", [], 400, nil),
        ("wrong type: records is a number", bytes(#"{"records": 5}"#), 400, nil),
        ("wrong type: body is a string", bytes(#""records""#), 400, nil),
        ("wrong type: record is a string", importBody(#""e2e.bad.imp2""#), 422, "id"),
        ("wrong type: id is a number", importBody(#"{"id": 5, "kind": "activity"}"#), 422, "id"),
        ("wrong type: number as text", importBody(#"{"id": "e2e.bad.imp2", "kind": "activity", "result": "al1.r01", "number": "drie", "title": "x"}"#), 422, "number"),
        ("unknown status", importBody(#"{"id": "e2e.bad.imp2", "kind": "activity", "result": "al1.r01", "number": 91, "title": "x", "status": "klaar"}"#), 422, "status"),
        ("unknown field", importBody(#"{"id": "e2e.bad.imp2", "colour": "rood"}"#), 422, "colour"),
        ("bad id: space", importBody(#"{"id": "a b", "title": "x"}"#), 422, "id"),
        ("bad id: 200 characters", importBody(#"{"id": ""# + longID + #"", "title": "x"}"#), 422, "id"),
        ("bad id: empty", importBody(#"{"id": "", "title": "x"}"#), 422, "id"),
        ("depth 1000", bytes(#"{"records": "# + nested(1000) + "}"), 400, "deep"),
        ("invalid UTF-8", invalidUTF8(prefix: #"{"records": [{"id": "e2e.bad.imp2", "title": ""#, suffix: #""}]}"#), 400, "UTF-8"),
    ]

    static var cases: [BadCase] {
        var list: [BadCase] = []
        for (name, body, status, mentions) in recordBodies {
            list.append(BadCase(name: "PUT new, " + name, method: "PUT", path: new, body: body, status: status, mentions: mentions))
            list.append(BadCase(name: "PUT existing, " + name, method: "PUT", path: existing, body: body, status: status, mentions: mentions))
            list.append(BadCase(name: "PATCH, " + name, method: "PATCH", path: existing, body: body, status: status, mentions: mentions))
        }
        for (name, body, status, mentions) in importBodies {
            list.append(BadCase(name: "import, " + name, method: "POST", path: "/v1/import", body: body, status: status, mentions: mentions))
        }
        let valid = bytes(#"{"kind": "activity", "result": "al1.r01", "number": 1, "title": "x"}"#)
        for method in ["GET", "PUT", "PATCH", "DELETE"] {
            let body = method == "GET" || method == "DELETE" ? nil : valid
            list.append(BadCase(name: "bad id: space", method: method, path: "/v1/records/a%20b", body: body, status: 400, mentions: "id"))
            list.append(BadCase(name: "bad id: 200 characters", method: method, path: "/v1/records/" + longID, body: body, status: 400, mentions: "id"))
            list.append(BadCase(name: "bad id: percent", method: method, path: "/v1/records/al1%25r01", body: body, status: 400, mentions: "id"))
        }
        list.append(BadCase(name: "bad id in history", method: "GET", path: "/v1/records/a%20b/history", body: nil, status: 400, mentions: "id"))
        // Unknown routes.
        for (method, path) in [("GET", "/v1/nope"), ("GET", "/v2/status"), ("GET", "/"), ("GET", "/v1/records/al1.r01.a01/nope"),
                               ("GET", "/v1/conflicts/x~y")]
        {
            list.append(BadCase(name: "unknown route", method: method, path: path, body: nil, status: 404, mentions: "route"))
        }
        // Wrong methods on routes that exist.
        for (method, path) in [("POST", "/v1/records/al1.r01.a01/history"), ("POST", "/v1/status"), ("DELETE", "/v1/digest"), ("GET", "/v1/import"), ("PUT", "/v1/import"),
                               ("PATCH", "/v1/records"), ("POST", "/v1/records/al1.r01.a01"), ("DELETE", "/v1/conflicts"),
                               ("GET", "/v1/quarantine/\(String(repeating: "0", count: 64))/release")]
        {
            list.append(BadCase(name: "wrong method", method: method, path: path, body: method == "GET" || method == "DELETE" ? nil : valid, status: nil, mentions: nil))
        }
        // Bodies the conflict route refuses before it looks for the conflict.
        list.append(BadCase(name: "resolve, malformed JSON", method: "POST", path: "/v1/conflicts/al1.r01.a01~status/resolve",
                            body: bytes("{"), status: 400, mentions: "JSON"))
        list.append(BadCase(name: "resolve, depth 1000", method: "POST", path: "/v1/conflicts/al1.r01.a01~status/resolve",
                            body: bytes(nested(1000)), status: 400, mentions: "deep"))
        return list
    }

    func state(_ d: DaemonHarness) async throws -> (digest: String, records: JSONValue?, record: JSONValue?) {
        let status = try await d.get("/v1/status")
        let record = try await d.get("/v1/records/al1.r01.a01")
        return (try await d.digestRoot(), status["records"], record)
    }

    func expectRefused(_ d: DaemonHarness, _ c: BadCase) async throws {
        let before = try await state(d)
        let reply = try await d.request(c.method, c.path, rawBody: c.body)
        #expect((400..<500).contains(reply.status), "\(c) → \(reply)")
        if let status = c.status { #expect(reply.status == status, "\(c) → \(reply)") }
        #expect(reply.isErrorShape, "\(c): not {error, message}: \(reply)")
        #expect(reply.contentType.hasPrefix("application/json"), "\(c)")
        if let word = c.mentions {
            let message = reply.json["message"]?.stringValue ?? ""
            #expect(message.localizedCaseInsensitiveContains(word), "\(c): message does not mention \(word): \(message)")
        }
        let after = try await state(d)
        #expect(after.digest == before.digest, "\(c) changed the replica")
        #expect(after.records == before.records, "\(c) changed the record counts")
        #expect(after.record == before.record, "\(c) changed al1.r01.a01")
    }

    @Test func everyBadInputIsRefusedAndChangesNothing() async throws {
        let d = try sharedDaemon()
        let cases = Self.cases
        #expect(cases.count > 100)
        for c in cases {
            try await expectRefused(d, c)
        }
        // The records the refused requests named were never created.
        #expect(try await d.request("GET", Self.new).status == 404)
        #expect(try await d.request("GET", "/v1/records/e2e.bad.imp1").status == 404)
        // And the daemon still works.
        let ok = try await d.request("PATCH", Self.existing, body: ["explanation": "nog steeds bereikbaar"])
        #expect(ok.status == 200, "\(ok)")
    }

    @Test func oversizeImportIs413() async throws {
        let d = try sharedDaemon()
        // A syntactically fine import just over the 64 MiB import limit.
        let filler = String(repeating: "x", count: 1000)
        var text = #"{"records": ["#
        let record = #"{"id": "e2e.big", "explanation": ""# + filler + #""},"#
        let count = (64 << 20) / record.utf8.count + 100
        text.reserveCapacity(count * record.utf8.count + 100)
        for _ in 0..<count { text += record }
        text += #"{"id": "e2e.big.last", "title": "x"}]}"#
        #expect(text.utf8.count > 64 << 20)
        try await expectRefused(d, BadCase(name: "import > 64 MiB", method: "POST", path: "/v1/import", body: Self.bytes(text), status: 413, mentions: nil))
    }

    @Test func wrongMethodNamesTheRoute() async throws {
        let d = try sharedDaemon()
        let reply = try await d.request("POST", "/v1/status", rawBody: nil)
        #expect([404, 405].contains(reply.status), "\(reply)")
        #expect(reply.json["message"]?.stringValue?.contains("/v1/status") == true, "\(reply)")
        let unknown = try await d.request("GET", "/v1/nope", rawBody: nil)
        #expect(unknown.json["message"]?.stringValue == "no such route: GET /v1/nope", "\(unknown)")
    }

    @Test func curlSeesTheErrorShapeToo() async throws {
        let d = try sharedDaemon()
        let result = try await runProcess(Binaries.curl, [
            "-sS", "--unix-socket", d.socketPath, "-X", "PATCH", "-H", "Content-Type: application/json",
            "--data-binary", #"{"status": "klaar"}"#, "-w", "\n%{http_code}", "http://localhost/v1/records/al1.r01.a01",
        ])
        #expect(result.exitCode == 0, "\(result)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.last == "422", "\(result)")
        let body = try JSONParser.parse(String(lines.first ?? ""))
        #expect(body["error"]?.stringValue == "invalid")
        #expect(body["message"]?.stringValue?.contains("status") == true)
    }
}
