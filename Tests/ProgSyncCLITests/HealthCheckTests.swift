import ProgSyncCLI
import ProgSyncCore
import Testing

/// `progsync status --check`: one line per problem, the worst one sets the Nagios exit code.
struct HealthCheckTests {
    static let ok: JSONValue = ["status": "ok", "checks": [:], "problems": []]

    @Test func aHealthyNodeIsOneOKLine() {
        let status: JSONValue = ["name": "jenv-1", "peers": [["name": "om", "state": "up"]], "held": 0]
        let problems = HealthCheck.problems(live: Self.ok, ready: Self.ok, status: status,
                                            latestReconciliation: ["id": "r1", "verdict": "in agreement"])
        #expect(problems.isEmpty)
        let (lines, code) = HealthCheck.summary(problems, status: status)
        #expect(code == 0 && lines.count == 1 && lines[0].hasPrefix("OK: jenv-1"), "\(lines)")
    }

    @Test func eachProblemIsALineAndTheWorstSetsTheExitCode() {
        let notReady: JSONValue = ["status": "failing", "problems": ["listeners not bound yet: peer", "the first self-check has not finished yet"]]
        let status: JSONValue = ["peers": [["name": "om", "state": "backing-off", "lastError": "connection refused"], ["name": "politie", "state": "up"]], "held": 3]
        let problems = HealthCheck.problems(live: Self.ok, ready: notReady, status: status,
                                            latestReconciliation: ["id": "r2", "verdict": "not in agreement", "reasons": ["om: unreachable"]])
        let (lines, code) = HealthCheck.summary(problems, status: status)
        #expect(code == 2)
        #expect(lines == [
            "CRITICAL: listeners not bound yet: peer", "CRITICAL: the first self-check has not finished yet",
            "WARNING: partner om is backing-off: connection refused", "WARNING: 3 commits held in quarantine (progsync quarantine)",
            "WARNING: last reconciliation r2 not in agreement: om: unreachable",
        ])
        let warningsOnly = HealthCheck.summary(problems.filter { $0.severity == .warning }, status: status)
        #expect(warningsOnly.exitCode == 1)
    }
}
