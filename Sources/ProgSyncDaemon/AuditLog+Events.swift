import Foundation
import HTTPTypes
import ProgSyncCore
import ProgSyncStore

// What each kind of event records. `origin` is the channel it came through (`local` for the
// Unix socket, `pull:<node>`, `push:<node>`, `bundle:<node>`, `reconcile:<node>`, `quarantine`,
// `tls:<address>`, `registry`); `actor` is who is answerable: the Unix user, the node that
// signed the commit, the certificate presented, or `progsyncd` for the daemon's own jobs.
extension AuditLog {
    /// A local API write that was refused (any 4xx/5xx answer to a write route).
    func refusedLocalWrite(request: String, object: String, user: String, error: APIError) {
        record(Event(action: "local-write", object: object, result: "refused", origin: "local", actor: user,
                     reason: error.code, detail: "\(request) \(error.status.code): \(error.message)"))
    }

    /// The refused and newly held commits of one `apply` (or retry, release, bundle import):
    /// one event per commit, or, past `commitsListed` of one origin, result and reason, one
    /// event for the lot (`origin/first…origin/last`), so a large batch cannot flood the log.
    func judged(_ report: ApplyReport, origin: String) {
        let verdicts = report.rejected.map { ("refused", $0.ref, $0.reason, $0.detail) } + report.held.map { ("held", $0.ref, $0.reason, $0.detail) }
        let groups = Dictionary(grouping: verdicts) { "\($0.0) \($0.1.origin.rawValue) \($0.2.rawValue)" }
        for key in groups.keys.sorted() {
            let group = groups[key]!
            let (result, first, reason, detail) = group[0]
            if group.count <= Self.commitsListed {
                for (result, ref, reason, detail) in group {
                    record(Event(action: "remote-commit", object: "\(ref)", result: result, origin: origin, actor: ref.origin.rawValue,
                                 reason: reason.rawValue, detail: detail, fromNetwork: true))
                }
                continue
            }
            let seqs = group.map(\.1.seq)
            record(Event(action: "remote-commit", object: "\(first.origin)/\(seqs.min()!)…\(first.origin)/\(seqs.max()!)", result: result,
                         origin: origin, actor: first.origin.rawValue, reason: reason.rawValue,
                         detail: "\(group.count) commits; the first: \(detail)", fromNetwork: true))
        }
    }

    static let commitsListed = 20

    /// A TLS connection to the peer listener refused: `pin` is the certificate presented, if any.
    func refusedTLS(address: String, pin: String?, reason: String, detail: String) {
        record(Event(action: "tls-connection", object: address, result: "refused", origin: "tls:\(address)", actor: pin ?? "no certificate",
                     reason: reason, detail: detail, fromNetwork: true))
    }

    /// A connection to the peer listener closed before TLS (the listener is full).
    func refusedConnection(address: String, reason: String, detail: String) {
        record(Event(action: "peer-connection", object: address, result: "refused", origin: "tls:\(address)", actor: "unknown",
                     reason: reason, detail: detail, fromNetwork: true))
    }

    /// An operator's action through the local API: a release, a resolution, a bundle import.
    func operatorAction(_ action: String, object: String, result: String, user: String, detail: String) {
        record(Event(action: action, object: object, result: result, origin: "local", actor: user, detail: detail))
    }

    /// Fields the daemon repaired from its commit log (or commits restored from a partner).
    func repaired(object: String, origin: String, detail: String) {
        record(Event(action: "reconcile-repair", object: object, result: "repaired", origin: origin, actor: "progsyncd", detail: detail))
    }

    /// Records who joined, left or changed between two registries. The one entry point for
    /// membership changes, whatever makes them (the registry file today, signed membership
    /// commits later).
    func membershipChanged(from old: PartnerRegistry, to new: PartnerRegistry, origin: String, actor: String) {
        for id in Set(old.nodes.keys).union(new.nodes.keys).sorted() {
            let before = old.node(id), after = new.node(id)
            let result: String
            var detail: [String] = []
            switch (before, after) {
            case (nil, let n?):
                result = "added"
                detail = ["org \(n.org)", "name \(n.name ?? "-")"]
            case (let n?, nil):
                result = "removed"
                detail = ["org \(n.org)", "name \(n.name ?? "-")"]
            case (let a?, let b?):
                if a.org != b.org { detail.append("org \(a.org) → \(b.org)") }
                if a.name != b.name { detail.append("name \(a.name ?? "-") → \(b.name ?? "-")") }
                if a.certificatePin != b.certificatePin { detail.append("certificate pin \(a.certificatePin ?? "-") → \(b.certificatePin ?? "-")") }
                if a.address != b.address { detail.append("address \(a.address ?? "-") → \(b.address ?? "-")") }
                if a.retiredAfter != b.retiredAfter {
                    detail.append("retired after \(a.retiredAfter.map(String.init) ?? "-") → \(b.retiredAfter.map(String.init) ?? "-")")
                }
                guard !detail.isEmpty else { continue }
                result = "changed"
            case (nil, nil):
                continue
            }
            record(Event(action: "membership", object: id.rawValue, result: result, origin: origin, actor: actor,
                         detail: detail.joined(separator: ", ")))
        }
        if old.coordinators != new.coordinators {
            record(Event(action: "membership", object: "coordinators", result: "changed", origin: origin, actor: actor,
                         detail: "\(Self.list(old.coordinators)) → \(Self.list(new.coordinators))"))
        }
    }

    private static func list(_ orgs: Set<String>) -> String { orgs.isEmpty ? "-" : orgs.sorted().joined(separator: ",") }

    /// At start: compares the registry with the one the audit log saw last (kept next to the
    /// log) and records the difference; the first start records every member as added.
    func noteRegistry(_ registry: PartnerRegistry, file: String) {
        let seenPath = path + ".registry"
        let seen = FileManager.default.contents(atPath: seenPath)
            .flatMap { try? JSONParser.parse([UInt8]($0)) }.flatMap { try? PartnerRegistry(json: $0) } ?? PartnerRegistry()
        membershipChanged(from: seen, to: registry, origin: "registry", actor: Self.owner(of: file))
        let temp = seenPath + ".tmp"
        if FileManager.default.createFile(atPath: temp, contents: Data(registry.json.canonicalBytes), attributes: [.posixPermissions: 0o600]) {
            rename(temp, seenPath)
        }
    }

    /// The user owning a file: who last put it in place, as far as the file system tells.
    static func owner(of file: String) -> String {
        var info = stat()
        guard stat(file, &info) == 0 else { return "unknown" }
        return LocalRequestContext.userName(uid: info.st_uid)
    }
}
