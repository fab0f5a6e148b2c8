import Foundation
import GRDB
import Logging
import ProgSyncCore
import Synchronization

/// After a restore, this node's own chain in the replica may end before commits it made after
/// the backup, which partners already hold. A local commit now would reuse one of those seqs: a
/// fork of its own chain that partners refuse for good. So local writes wait until every partner
/// this node talks to has said how far it holds this node's chain (hello's version vector) and
/// the replica has caught up to the furthest of them (those commits come back through the normal
/// pull, signed by this node's key). The operator can end the wait (`progsync resume-writes`),
/// e.g. when a partner is gone for good. The wait survives restarts (meta `restored`).
struct OwnChainGate: Sendable {
    var restoredAt: UInt64
    /// Partners not heard from yet in this run; nil until the daemon names them.
    var waitingFor: Set<NodeID>?
    /// The highest seq of this node's chain a partner said it holds.
    var heldByPartners: UInt64 = 0
}

/// What `status` shows while local writes wait after a restore.
public struct OwnChainCatchUp: Sendable {
    public var restoredAt: UInt64
    public var waitingFor: [NodeID]
    public var ownSeq: UInt64
    public var heldByPartners: UInt64
}

/// What a restore did, for the operator.
public struct RestoreOutcome: Sendable {
    public var check: ReplicaFileCheck
    /// Where the replacing moved the previous replica (and its -wal, -shm), if there was one.
    public var previous: String?
}

extension Replica {
    static func loadOwnChainGate(_ pool: any DatabaseWriter) throws -> OwnChainGate? {
        try pool.read { db in
            guard let text = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'restored'") else { return nil }
            let at = (try? JSONParser.parse(Array(text.utf8), maxDepth: 4))?["at"]?.intValue ?? 0
            return OwnChainGate(restoredAt: UInt64(max(0, at)))
        }
    }

    /// Names the partners whose word on this node's chain local writes wait for after a restore.
    public func expectOwnChain(from partners: Set<NodeID>) {
        ownChain.withLock { gate in gate?.waitingFor = partners }
    }

    /// A partner said which of this node's commits it holds (its version vector).
    public func partnerHolds(_ vector: [NodeID: UInt64], partner: NodeID) {
        ownChain.withLock { gate in
            guard gate != nil else { return }
            gate!.heldByPartners = max(gate!.heldByPartners, vector[nodeID] ?? 0)
            gate!.waitingFor?.remove(partner)
        }
    }

    /// nil when local writes are open.
    public var ownChainCatchUp: OwnChainCatchUp? {
        guard let gate = ownChain.withLock({ $0 }) else { return nil }
        return OwnChainCatchUp(restoredAt: gate.restoredAt, waitingFor: (gate.waitingFor ?? []).sorted(),
                               ownSeq: heads[nodeID]?.seq ?? 0, heldByPartners: gate.heldByPartners)
    }

    /// Called in the writer's transaction before a local commit: refuses while the restored chain
    /// may lag what partners hold, and opens for good (in the same transaction) once it does not.
    func passOwnChainGate(_ ctx: inout ApplyContext) throws {
        guard let gate = ownChain.withLock({ $0 }) else { return }
        let own = ctx.state.heads[nodeID]?.seq ?? 0
        guard let waiting = gate.waitingFor, waiting.isEmpty, own >= gate.heldByPartners else {
            let names = (gate.waitingFor ?? []).sorted().map { registry.node($0)?.name ?? $0.rawValue }
            throw ReplicaError(.catchingUp, "restored from a backup: local writes wait until this node has its own commits back from its partners (\(names.isEmpty ? "partners not named yet" : "waiting for " + names.joined(separator: ", ")); own chain at \(own), partners hold \(gate.heldByPartners)); `progsync resume-writes` ends the wait")
        }
        try openOwnChainGate(&ctx)
    }

    /// Ends the wait, whatever partners said: the operator's decision.
    public func resumeLocalWrites() throws {
        guard ownChain.withLock({ $0 }) != nil else { return }
        try write { ctx in try openOwnChainGate(&ctx) }
    }

    private func openOwnChainGate(_ ctx: inout ApplyContext) throws {
        try ctx.db.execute(sql: "DELETE FROM meta WHERE key = 'restored'")
        // Commits of this node that came back from partners do not move the clock (own commits
        // never do): the next local stamp must still follow them.
        if let newest = try Int64.fetchOne(ctx.db, sql: "SELECT stamp FROM commits WHERE origin = ? ORDER BY seq DESC LIMIT 1",
                                           arguments: [nodeID.rawValue]) {
            ctx.state.clock.receive(Stamp(rawValue: UInt64(bitPattern: newest)), nowMilliseconds: configuration.now())
        }
        ownChain.withLock { $0 = nil }
        configuration.logger.info("local writes resume after the restore", metadata: ["ownSeq": "\(ctx.state.heads[nodeID]?.seq ?? 0)"])
    }

    /// Replaces the replica at `path` with a checked backup of node `node`; no daemon may hold
    /// it (the caller holds the data-folder lock). The file is checked before anything moves;
    /// the previous replica is kept as `<path>.before-restore-<time>` (with its -wal and -shm);
    /// the restored replica waits for partners before it writes (`OwnChainGate`).
    public static func restore(from file: String, to path: String, node: NodeID, now: UInt64 = wallClockMilliseconds()) throws -> RestoreOutcome {
        let check = try checkCopy(at: file)
        guard let manifest = check.manifest else {
            throw ReplicaError(.invalid, "\(file) is not a backup made by `progsync backup` (no manifest)")
        }
        guard manifest.node == node else {
            throw ReplicaError(.invalid, "\(file) is a backup of node \(manifest.node), not of this node \(node)")
        }
        let staging = path + ".restoring"
        defer { for suffix in ["", "-journal", "-wal", "-shm"] { unlink(staging + suffix) } }
        do {
            try? FileManager.default.removeItem(atPath: staging)
            try FileManager.default.copyItem(atPath: file, toPath: staging)
            let queue = try DatabaseQueue(path: staging)
            try queue.write { db in
                let note = JSONValue.object(["at": .int(Int64(now)), "from": .string(file)])
                try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('restored', ?)", arguments: [note.canonicalString])
            }
            try queue.close()
            try syncFile(staging)
        } catch let error as ReplicaError {
            throw error
        } catch {
            throw ReplicaError(.invalid, "cannot stage the restore beside \(path): \(describe(error))")
        }
        var previous: String?
        if FileManager.default.fileExists(atPath: path) {
            let kept = "\(path).before-restore-\(BackupName.timestamp(now))"
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
                guard rename(path + suffix, kept + suffix) == 0 else {
                    throw ReplicaError(.invalid, "cannot move \(path + suffix) aside: \(String(cString: strerror(errno)))")
                }
            }
            previous = kept
        }
        guard rename(staging, path) == 0 else {
            throw ReplicaError(.invalid, "cannot move the restored replica into \(path): \(String(cString: strerror(errno)))")
        }
        try? syncFile(URL(fileURLWithPath: path).deletingLastPathComponent().path)
        return RestoreOutcome(check: check, previous: previous)
    }
}
