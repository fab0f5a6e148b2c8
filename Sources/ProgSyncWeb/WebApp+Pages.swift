import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ProgSyncCore
import ProgSyncReport
import ProgSyncStore

extension WebApp {
    // MARK: Overview

    /// The legend with the count per state (over all live activities), symbol and colour and text.
    func legend(_ lang: ReportLanguage) throws -> [[String: Any]] {
        let counts = try backend.replica.statusCounts(kind: .activity)
        return StatusCounts.order.map { status in
            let key = status.map { JSONValue.string($0.rawValue).canonicalString }
            return [
                "code": status?.rawValue ?? "", "label": Words.status(status, lang), "symbol": status?.symbol ?? "—",
                "colour": ReportRenderer.colour(status), "count": counts[key] ?? 0,
                // "No status" is counted but not a filter: the list cannot ask for a missing field.
                "isStatus": status != nil,
            ]
        }
    }

    /// The states to choose from; `withNone` adds "no status" (an edit form, not a filter, whose
    /// empty choice means "any").
    func statusOptions(_ lang: ReportLanguage, selected: String?, withNone: Bool = true) -> [[String: Any]] {
        (withNone ? StatusCounts.order : ProgrammeStatus.allCases.map { $0 }).map { status in
            [
                "code": status?.rawValue ?? "", "label": Words.status(status, lang), "symbol": status?.symbol ?? "—",
                "selected": (status?.rawValue ?? "") == (selected ?? ""),
            ]
        }
    }

    /// Action lines → results → activities, one page of activities at a time: only that page's
    /// records (and their parents) are read, so 100k activities never load at once.
    func overview(_ request: Request, _ context: some WebRequestContext, _ mount: Mount, ours: Bool) throws -> Response {
        let viewer = try require(request, context, mount)
        let lang = language(request)
        let q = request.uri.queryParameters
        func param(_ name: String) -> String? {
            q[Substring(name)].map(String.init).flatMap { (text: String) -> String? in text.trimmingCharacters(in: .whitespaces).isEmpty ? nil : text }
        }
        var query = RecordQuery()
        query.kind = RecordKind.activity.rawValue
        if let status = param("status") {
            guard let parsed = ProgrammeStatus(userInput: status) else { throw WebFailure(.badRequest, "\(status)?") }
            query.status = parsed.rawValue
        }
        query.owner = ours ? backend.org : param("owner")
        query.partner = param("partner")
        query.text = param("q")
        let pageNumber = max(1, Int(q["page"].map(String.init) ?? "1") ?? 1)
        query.limit = configuration.pageSize
        query.offset = (pageNumber - 1) * configuration.pageSize
        let (ids, total) = try backend.replica.recordIDs(query)
        let groups = try groupsOf(ids, lang: lang, changedSince: viewer.previousVisit)

        var data = common(request, mount, viewer, title: ours ? "ours" : "overview", lang: lang)
        data["path"] = ours ? "/ours" : "/"
        data["legend"] = try legend(lang)
        data["statusOptions"] = statusOptions(lang, selected: query.status, withNone: false)
        data["filter"] = ["owner": ours ? "" : (query.owner ?? ""), "partner": query.partner ?? "", "q": query.text ?? ""]
        data["groups"] = groups
        data["total"] = total
        data["pageNumber"] = pageNumber
        let pageCount = max(1, (total + configuration.pageSize - 1) / configuration.pageSize)
        data["pageCount"] = pageCount
        func link(_ page: Int) -> String {
            var parts: [String] = []
            for name in ["status", "owner", "partner", "q"] where !(ours && name == "owner") {
                if let value = param(name) { parts.append(name + "=" + (value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")) }
            }
            parts.append("page=\(page)")
            return mount.base + (ours ? "/ours" : "/") + "?" + parts.joined(separator: "&")
        }
        if pageNumber > 1 { data["previousPage"] = link(pageNumber - 1) }
        if pageNumber < pageCount { data["nextPage"] = link(pageNumber + 1) }
        return page("overview", data, lang: lang)
    }

    /// The page's activities under their result and action line headings, in id order.
    func groupsOf(_ ids: [String], lang: ReportLanguage, changedSince: Int64?) throws -> [[String: Any]] {
        let replica = backend.replica
        let activities = try replica.fields(ofRecords: ids)
        let resultIDs = ids.compactMap { activities[$0]?["result"]?.value.stringValue }
        let results = try replica.fields(ofRecords: resultIDs)
        let lineIDs = results.values.compactMap { $0["actionLine"]?.value.stringValue }
        let lines = try replica.fields(ofRecords: lineIDs)
        let t = Words.table(lang)
        func heading(_ word: String, _ fields: [String: FieldState]?, _ id: String?) -> String {
            guard let fields, !fields.isEmpty else { return "\(word): —" }
            let number = fields["number"]?.value.intValue.map { " \($0)" } ?? ""
            return "\(word)\(number): \(fields["title"]?.value.stringValue ?? id ?? "")"
        }
        var groups: [[String: Any]] = []
        var currentResult: String?? = .none
        var rows: [[String: Any]] = []
        func close() {
            guard case .some(let result) = currentResult else { return }
            let resultFields = result.flatMap { results[$0] }
            let line = resultFields?["actionLine"]?.value.stringValue
            groups.append([
                "actionLine": heading(t["actionLine"]!, line.flatMap { lines[$0] }, line),
                "result": heading(t["result"]!, resultFields, result),
                "activities": rows,
            ])
            rows = []
        }
        for id in ids {
            guard let fields = activities[id], !fields.isEmpty else { continue }
            let result = fields["result"]?.value.stringValue
            if currentResult == .none || currentResult! != result {
                close()
                currentResult = .some(result)
            }
            let status = fields["status"]?.value.stringValue.flatMap(ProgrammeStatus.init(rawValue:))
            let newest = fields.values.map { Int64($0.version.stamp.milliseconds) }.max() ?? 0
            rows.append([
                "id": id, "number": fields["number"]?.value.intValue.map(String.init) ?? "",
                "title": fields["title"]?.value.stringValue ?? id,
                "statusLabel": Words.status(status, lang), "symbol": status?.symbol ?? "—", "colour": ReportRenderer.colour(status),
                "owner": fields["owner"]?.value.stringValue ?? "—",
                "partners": fields["partners"]?.value.arrayValue?.compactMap(\.stringValue).joined(separator: ", ") ?? "—",
                "changed": changedSince.map { newest > $0 } ?? false,
            ])
        }
        close()
        return groups
    }

    // MARK: Activity

    /// A version's identity as the edit form carries it: what the field was when the form was made.
    static func versionKey(_ state: FieldState?) -> String {
        guard let v = state?.version else { return "none" }
        return "\(v.stamp.hex)-\(v.origin.rawValue)-\(v.seq)"
    }

    /// Why this person may not edit this record; nil: they may.
    func readOnlyReason(_ viewer: Viewer, fields: [String: FieldState], lang: ReportLanguage) -> String? {
        let t = Words.table(lang)
        guard viewer.isEditor else { return t["readOnlyViewer"] }
        if backend.replica.registry.isCoordinator(org: backend.org) { return nil }
        let owner = fields["owner"]?.value.stringValue
        return owner == backend.org ? nil : "\(t["ownedBy"]!) \(owner ?? "—")"
    }

    func activityPage(_ request: Request, _ context: some WebRequestContext, _ mount: Mount, id: String,
                      answer: HTTPResponse.Status = .ok, message: String? = nil, formValues: [String: String]? = nil) throws -> Response {
        let viewer = try require(request, context, mount)
        let lang = language(request)
        let t = Words.table(lang)
        guard ProgrammeSchema.isValidRecordID(id) else { throw WebFailure(.notFound, "notFound") }
        let replica = backend.replica
        let fields = try replica.fields(ofRecord: id)
        guard !fields.isEmpty else { throw WebFailure(.notFound, "notFound") }
        let history = try replica.history(ofRecord: id)
        var authors: [CommitRef: String] = [:]
        for stored in history {
            let c = stored.commit.commit
            authors[c.ref] = (try? replica.author(of: c.ref)) ?? nil ?? c.author
        }
        func org(_ origin: NodeID) -> String { replica.registry.org(of: origin) ?? "?" }
        func shown(_ field: String, _ value: JSONValue) -> String {
            if field == "status", let s = value.stringValue.flatMap(ProgrammeStatus.init(rawValue:)) { return Words.status(s, lang) }
            if let text = value.stringValue { return text }
            if let list = value.arrayValue { return list.map { $0.stringValue ?? $0.canonicalString }.joined(separator: ", ") }
            return value.canonicalString
        }
        let order = ["kind", "number", "title", "status", "explanation", "owner", "partners", "result", "actionLine", "theme"]
        let names = order.filter { fields[$0] != nil } + fields.keys.filter { !order.contains($0) }.sorted()
        let status = fields["status"]?.value.stringValue.flatMap(ProgrammeStatus.init(rawValue:))
        let fieldRows: [[String: Any]] = names.map { name in
            let state = fields[name]!
            return [
                "record": id, "name": name, "label": t[name] ?? name, "value": shown(name, state.value),
                "author": authors[state.version.ref] ?? "?", "org": org(state.version.origin),
                "time": Stamp.iso8601(milliseconds: state.version.stamp.milliseconds),
                "isStatus": name == "status", "symbol": status?.symbol ?? "—", "colour": ReportRenderer.colour(status),
            ]
        }
        let reason = readOnlyReason(viewer, fields: fields, lang: lang)
        let conflicts: [[String: Any]] = fields.keys.sorted().compactMap { name in
            let state = fields[name]!
            guard !state.losers.isEmpty else { return nil }
            let versions = [state.version] + state.losers
            return [
                "fieldLabel": t[name] ?? name, "conflictID": "\(id)~\(name)",
                "canResolve": viewer.isEditor && reason == nil,
                "versions": versions.enumerated().map { index, v -> [String: Any] in
                    [
                        "index": index + 1, "pick": index, "winner": index == 0,
                        "value": shown(name, (try? JSONParser.parse(v.value)) ?? .null),
                        "author": authors[v.ref] ?? "?", "org": org(v.origin),
                        "time": Stamp.iso8601(milliseconds: v.stamp.milliseconds),
                        "canResolve": viewer.isEditor && reason == nil, "conflictID": "\(id)~\(name)",
                    ]
                },
            ]
        }
        let historyRows: [[String: Any]] = history.reversed().map { stored in
            let c = stored.commit.commit
            return [
                "time": Stamp.iso8601(milliseconds: c.stamp.milliseconds), "author": authors[c.ref] ?? c.author,
                "org": org(c.origin), "ref": "\(c.origin.rawValue.prefix(12))…/\(c.seq)",
                "changes": c.changes.filter { $0.record == id }.map { "\(t[$0.field] ?? $0.field) = \(shown($0.field, $0.value))" }
                    .joined(separator: "; "),
            ]
        }
        var data = common(request, mount, viewer, title: "activity", lang: lang)
        data["pageTitle"] = fields["title"]?.value.stringValue ?? id
        data["id"] = id
        data["fields"] = fieldRows
        data["readOnlyReason"] = reason
        data["editable"] = reason == nil
        data["baseStatus"] = Self.versionKey(fields["status"])
        data["baseExplanation"] = Self.versionKey(fields["explanation"])
        data["statusOptions"] = statusOptions(lang, selected: formValues?["status"] ?? status?.rawValue)
        data["explanation"] = formValues?["explanation"] ?? fields["explanation"]?.value.stringValue ?? ""
        data["conflicts"] = conflicts
        data["hasConflicts"] = !conflicts.isEmpty
        data["history"] = historyRows
        if let message {
            data["message"] = t[message] ?? message
            data["messageKind"] = answer.code >= 400 ? "error" : "ok"
        } else if request.uri.queryParameters["saved"] != nil {
            data["message"] = t["saved"]
            data["messageKind"] = "ok"
        }
        return page("activity", data, status: answer, lang: lang)
    }

    /// Saves status and explanation: only fields whose value the person changed, and only when
    /// nobody changed them since the form was rendered (else they are told, and the form keeps
    /// their text, now based on the new version, so saving again replaces it knowingly).
    func edit(_ request: Request, _ context: some WebRequestContext, _ mount: Mount, id: String) async throws -> Response {
        let viewer = try require(request, context, mount)
        let form = try await form(request, context, csrf: viewer.csrf)
        guard viewer.isEditor else { throw WebFailure(.forbidden, "readOnlyViewer") }
        guard ProgrammeSchema.isValidRecordID(id) else { throw WebFailure(.notFound, "notFound") }
        let fields = try backend.replica.fields(ofRecord: id)
        guard !fields.isEmpty else { throw WebFailure(.notFound, "notFound") }
        if let reason = readOnlyReason(viewer, fields: fields, lang: language(request)) { throw WebFailure(.forbidden, reason) }
        var writes: [FieldWrite] = []
        var stale = false
        var given: [String: String] = [:]
        for name in ["status", "explanation"] {
            guard var text = form[name] else { continue }
            // Browsers send a textarea's line breaks as CRLF.
            text = text.replacingOccurrences(of: "\r\n", with: "\n")
            given[name] = text
            let value: JSONValue
            if name == "status" {
                if text.isEmpty { continue }
                guard let status = ProgrammeStatus(userInput: text) else { throw WebFailure(.unprocessableContent, "status: \(text)?") }
                value = .string(status.rawValue)
            } else {
                value = .string(text)
            }
            if fields[name]?.value == value || (fields[name] == nil && text.isEmpty) { continue }
            if form["base." + name] != Self.versionKey(fields[name]) { stale = true }
            do { try ProgrammeSchema.validate(field: name, value: value) } catch {
                throw WebFailure(.unprocessableContent, error.description)
            }
            writes.append(FieldWrite(record: id, field: name, value: value))
        }
        if stale {
            return try activityPage(request, context, mount, id: id, answer: .conflict, message: "changedMeanwhile", formValues: given)
        }
        if !writes.isEmpty {
            do {
                _ = try await backend.commit(author: "web:" + viewer.user.name, writes: writes, resolving: false)
            } catch let error as ReplicaError {
                throw WebFailure(error.code == .forbidden ? .forbidden : .unprocessableContent, error.message)
            }
        }
        return Self.redirect(mount.base + "/activities/" + id + "?saved=1")
    }

    /// Resolves `<record>~<field>` with a picked version or a new value (JSON, or plain text).
    func resolve(_ request: Request, _ context: some WebRequestContext, _ mount: Mount, conflictID: String) async throws -> Response {
        let viewer = try require(request, context, mount)
        let form = try await form(request, context, csrf: viewer.csrf)
        guard viewer.isEditor else { throw WebFailure(.forbidden, "readOnlyViewer") }
        let parts = conflictID.split(separator: "~", maxSplits: 1).map(String.init)
        guard parts.count == 2, ProgrammeSchema.isValidRecordID(parts[0]) else { throw WebFailure(.notFound, "notFound") }
        let fields = try backend.replica.fields(ofRecord: parts[0])
        if let reason = readOnlyReason(viewer, fields: fields, lang: language(request)) { throw WebFailure(.forbidden, reason) }
        guard let state = fields[parts[1]], !state.losers.isEmpty else { throw WebFailure(.notFound, "noConflicts") }
        let value: JSONValue
        if let pick = form["pick"].flatMap(Int.init) {
            let versions = [state.version] + state.losers
            guard versions.indices.contains(pick) else { throw WebFailure(.badRequest, "pick \(pick)?") }
            value = (try? JSONParser.parse(versions[pick].value)) ?? .null
        } else if let text = form["value"], !text.isEmpty {
            value = (try? JSONParser.parse(Array(text.utf8))) ?? .string(text)
        } else {
            throw WebFailure(.badRequest, "newValue")
        }
        do { try ProgrammeSchema.validate(field: parts[1], value: value) } catch {
            throw WebFailure(.unprocessableContent, error.description)
        }
        do {
            _ = try await backend.commit(author: "web:" + viewer.user.name,
                                         writes: [FieldWrite(record: parts[0], field: parts[1], value: value)], resolving: true)
        } catch let error as ReplicaError {
            throw WebFailure(error.code == .forbidden ? .forbidden : .unprocessableContent, error.message)
        }
        return Self.redirect(mount.base + "/activities/" + parts[0] + "?saved=1")
    }

    // MARK: Lists

    func conflictsPage(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Response {
        let viewer = try require(request, context, mount)
        guard viewer.isEditor else { throw WebFailure(.forbidden, "editorsOnly") }
        let lang = language(request)
        let entries = try backend.replica.conflicts()
        let titles = try backend.replica.fields(ofRecords: entries.map(\.record))
        var data = common(request, mount, viewer, title: "conflicts", lang: lang)
        let rows: [[String: Any]] = entries.map { e in
            [
                "record": e.record, "title": titles[e.record]?["title"]?.value.stringValue ?? e.record,
                "field": Words.table(lang)[e.field] ?? e.field, "count": e.losers.count + 1,
            ]
        }
        data["conflicts"] = rows
        data["hasConflicts"] = !rows.isEmpty
        return page("conflicts", data, lang: lang)
    }

    func heldPage(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Response {
        let viewer = try require(request, context, mount)
        guard viewer.isEditor else { throw WebFailure(.forbidden, "editorsOnly") }
        let lang = language(request)
        let rows: [[String: Any]] = try backend.replica.heldCommits().map { h in
            [
                "origin": "\(backend.replica.registry.org(of: h.ref.origin) ?? "?") (\(h.ref.origin.rawValue.prefix(12))…/\(h.ref.seq))",
                "reason": h.reason.rawValue, "detail": h.detail, "received": Stamp.iso8601(milliseconds: h.receivedAt),
            ]
        }
        var data = common(request, mount, viewer, title: "held", lang: lang)
        data["held"] = rows
        data["hasHeld"] = !rows.isEmpty
        return page("held", data, lang: lang)
    }

    func partnersPage(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Response {
        let viewer = try require(request, context, mount)
        let lang = language(request)
        let rows: [[String: Any]] = try backend.partners().map { p in
            [
                "name": p["name"]?.stringValue ?? "?", "org": p["org"]?.stringValue ?? "?", "state": p["state"]?.stringValue ?? "?",
                "lag": p["lagCommits"]?.intValue ?? 0, "lastContact": p["lastContact"]?.stringValue ?? "—",
            ]
        }
        var data = common(request, mount, viewer, title: "partners", lang: lang)
        data["partners"] = rows
        data["hasPartners"] = !rows.isEmpty
        if let report = backend.latestReconcileReport() {
            let verdict = report["verdict"]?.stringValue ?? report["result"]?.stringValue
            data["reconcile"] = [report["id"]?.stringValue, report["finished"]?.stringValue ?? report["time"]?.stringValue, verdict]
                .compactMap { $0 }.joined(separator: " · ")
        }
        return page("partners", data, lang: lang)
    }

    // MARK: Reports

    func reportsPage(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Response {
        let viewer = try require(request, context, mount)
        let lang = language(request)
        var data = common(request, mount, viewer, title: "reports", lang: lang)
        data["legend"] = try legend(lang)
        return page("reports", data, lang: lang)
    }

    /// The whole programme, as `progsync report` builds it.
    func programmeReport() throws -> ProgrammeReport {
        var query = RecordQuery()
        query.limit = Int.max
        let ids = try backend.replica.recordIDs(query).ids
        let fields = try backend.replica.fields(ofRecords: ids)
        return ProgrammeReport(records: ids.compactMap { id in fields[id].map { FlatRecord(id: id, fields: $0.mapValues(\.value)) } })
    }

    func reportHTML(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Response {
        _ = try require(request, context, mount)
        let lang = language(request)
        let html = ReportRenderer.html(try programmeReport(), options: ReportOptions(language: lang, date: Self.today()))
        var headers: HTTPFields = [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"]
        if request.uri.queryParameters["download"] != nil {
            headers[.contentDisposition] = "attachment; filename=\"programme-\(lang.rawValue).html\""
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// One line per activity, with its action line and result; cells a spreadsheet would read as
    /// a formula are guarded as the CLI's export guards them.
    func reportCSV(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Response {
        _ = try require(request, context, mount)
        let lang = language(request)
        let t = Words.table(lang)
        var out = String(decoding: CSV.byteOrderMark, as: UTF8.self)
        out += CSV.line([t["actionLine"]!, t["result"]!, t["number"]!, t["activity"]!, t["status"]!, "code", t["owner"]!, t["partners"]!, t["explanation"]!])
        for line in try programmeReport().actionLines {
            for result in line.results {
                for a in result.activities {
                    out += CSV.line([
                        line.number.map(String.init) ?? "", result.number.map(String.init) ?? "", a.number.map(String.init) ?? "",
                        a.title, Words.status(a.status, lang), a.status?.rawValue ?? "", a.owner ?? "", a.partners.joined(separator: ", "),
                        a.explanation ?? "",
                    ].map(CSV.guarded))
                }
            }
        }
        return Response(status: .ok, headers: [
            .contentType: "text/csv; charset=utf-8", .cacheControl: "no-store",
            .contentDisposition: "attachment; filename=\"programme-\(lang.rawValue).csv\"",
        ], body: .init(byteBuffer: ByteBuffer(string: out)))
    }

    static func today() -> String {
        String(Stamp.iso8601(milliseconds: Replica.wallClockMilliseconds()).prefix(10))
    }

    // MARK: Live

    /// The node's change stream for an open page (server-sent events).
    func events(_ request: Request, _ context: some WebRequestContext, _ mount: Mount) throws -> Response {
        _ = try require(request, context, mount)
        guard let stream = backend.subscribe() else { throw WebFailure(.serviceUnavailable, "error") }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: .init { writer in
                try await writer.write(ByteBuffer(string: "retry: 1000\n: progsync live\n\n"))
                for await text in stream { try await writer.write(ByteBuffer(string: text)) }
                try await writer.finish(nil)
            })
    }
}
