import Foundation
import Logging
import ProgSyncCore
import ProgSyncStore
import ServiceLifecycle

/// The nightly backup (`backup.schedule`): the same checked online copy as `progsync backup`,
/// into `backup.folder` as `replica-<time>.sqlite`, keeping the newest `backup.keep`.
struct NightlyBackup: Service {
    let replica: Replica
    let schedule: ReconcileSchedule
    let folder: String
    let keep: Int
    let logger: Logger

    static let prefix = "replica-"
    static let suffix = ".sqlite"

    func run() async throws {
        while let next = schedule.next(after: Date()) {
            let wait = max(0, next.timeIntervalSinceNow)
            guard (try? await cancelWhenGracefulShutdown({ try await Task.sleep(for: .milliseconds(Int64(wait * 1000) + 50)) })) != nil
            else { return }
            do {
                let check = try await LocalAPI.onBundleQueue { [self] in try takeBackup(now: Replica.wallClockMilliseconds()) }
                logger.info("nightly backup written", metadata: ["path": "\(check.path)", "bytes": "\(check.bytes)", "digest": "\(Hex.encode(check.digest))"])
            } catch {
                logger.error("nightly backup failed", metadata: ["error": "\(error)"])
            }
        }
        // Off: nothing to do until shutdown (a service must not return early).
        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(86_400 * 365)) }
    }

    /// One backup, then the oldest beyond `keep` are removed (by name, which sorts by time).
    func takeBackup(now: UInt64) throws -> ReplicaFileCheck {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let check = try replica.backup(to: "\(folder)/\(Self.prefix)\(BackupName.timestamp(now))\(Self.suffix)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: folder)
            .filter { $0.hasPrefix(Self.prefix) && $0.hasSuffix(Self.suffix) }.sorted()
        for old in kept.dropLast(keep) {
            try FileManager.default.removeItem(atPath: folder + "/" + old)
        }
        return check
    }
}
