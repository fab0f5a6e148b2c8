import ProgSyncCore

/// `progsync status --check`: the node's problems, one line each, with Nagios' exit codes
/// (0 OK, 1 WARNING, 2 CRITICAL). Critical: the daemon is unreachable, not live or not ready.
/// Warning: a partner is not up, commits wait in quarantine, or the last reconciliation is not in
/// agreement.
public enum HealthCheck {
    public enum Severity: Int32, Comparable, Sendable {
        case ok = 0, warning = 1, critical = 2
        public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
        var label: String {
            switch self {
            case .ok: "OK"
            case .warning: "WARNING"
            case .critical: "CRITICAL"
            }
        }
    }

    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var severity: Severity
        public var message: String
        public init(_ severity: Severity, _ message: String) {
            self.severity = severity
            self.message = message
        }
        public var description: String { "\(severity.label): \(message)" }
    }

    /// The problems in the daemon's answers: `/v1/health` and `/v1/health/ready` (200 or 503,
    /// both with `problems`), `/v1/status`, and the latest reconciliation report when there is one.
    public static func problems(live: JSONValue, ready: JSONValue, status: JSONValue, latestReconciliation: JSONValue?) -> [Problem] {
        var out: [Problem] = []
        for (answer, what) in [(live, "liveness"), (ready, "readiness")] where answer["status"]?.stringValue != "ok" {
            let listed = answer["problems"]?.arrayValue?.compactMap(\.stringValue) ?? []
            out += (listed.isEmpty ? ["\(what) check failed"] : listed).map { Problem(.critical, $0) }
        }
        for peer in status["peers"]?.arrayValue ?? [] where peer["state"]?.stringValue != "up" {
            let name = peer["name"]?.stringValue ?? peer["node"]?.stringValue ?? "?"
            var line = "partner \(name) is \(peer["state"]?.stringValue ?? "unknown")"
            if let error = peer["lastError"]?.stringValue { line += ": \(error)" }
            out.append(Problem(.warning, line))
        }
        if let held = status["held"]?.intValue, held > 0 {
            out.append(Problem(.warning, "\(held) commit\(held == 1 ? "" : "s") held in quarantine (progsync quarantine)"))
        }
        if let report = latestReconciliation, let verdict = report["verdict"]?.stringValue, verdict != "in agreement" {
            let reasons = report["reasons"]?.arrayValue?.compactMap(\.stringValue).joined(separator: "; ") ?? ""
            out.append(Problem(.warning, "last reconciliation \(report["id"]?.stringValue ?? "") \(verdict)\(reasons.isEmpty ? "" : ": " + reasons)"))
        }
        return out
    }

    /// The lines to print and the exit code.
    public static func summary(_ problems: [Problem], status: JSONValue) -> (lines: [String], exitCode: Int32) {
        guard let worst = problems.map(\.severity).max() else {
            let node = status["name"]?.stringValue ?? status["node"]?.stringValue ?? "node"
            let peers = status["peers"]?.arrayValue?.count ?? 0
            return (["OK: \(node) live and ready, \(peers) partner\(peers == 1 ? "" : "s") up, no commits held"], 0)
        }
        return (problems.map(\.description), worst.rawValue)
    }
}
