import Logging
import ProgSyncStore

/// A part of the daemon that merges partners' commits: the replicator (pull), the peer API
/// (push), the reconciler, the quarantine retry and release, the bundle import.
protocol PartnerCommitIntake {
    var replica: Replica { get }
    var metrics: DaemonMetrics { get }
    var audit: AuditLog { get }
}

extension PartnerCommitIntake {
    /// The one way partners' commits enter the replica, whatever brought them: `work` runs on the
    /// writer's thread, timed for the merge histogram, and its verdicts are judged under
    /// `channel` (see `judged(_:from:)`), and a change of the partnership it brought is audited.
    func merge(from channel: String, writing work: @escaping @Sendable (Replica) throws -> ApplyReport) async throws -> ApplyReport {
        let replica = replica
        let before = replica.registry
        let report = try await metrics.merging(replica) { try await replica.writing(work) }
        judged(report, from: channel)
        audit.membershipChanged(from: before, to: replica.registry, origin: channel, actor: "progsyncd")
        return report
    }

    /// Every held or refused commit of a merge into the audit log under `channel` (`pull:<node>`,
    /// `push:<node>`, `bundle:<node>`, `reconcile:<node>`, `quarantine`), and every refusal into
    /// the daemon's log. For a merge run outside the writer's queue (a bundle) after it is timed.
    func judged(_ report: ApplyReport, from channel: String) {
        audit.judged(report, origin: channel)
        for r in report.rejected {
            audit.logger.warning("partner commit refused", metadata: [
                "channel": "\(channel)", "commit": "\(r.ref)", "reason": "\(r.reason)", "detail": "\(r.detail)",
            ])
        }
    }
}
