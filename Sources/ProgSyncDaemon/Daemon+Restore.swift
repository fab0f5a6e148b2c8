import Foundation
import ProgSyncCore
import ProgSyncStore

/// `progsyncd restore FILE`: replaces the data folder's replica with a checked backup of this
/// node. Holds the data-folder lock throughout, so it refuses while a daemon runs there, and no
/// daemon can start halfway through.
public func restoreReplica(configuration: DaemonConfiguration, from file: String) throws -> RestoreOutcome {
    guard FileManager.default.fileExists(atPath: configuration.dataDirectory) else {
        throw ConfigurationError("no data folder \(configuration.dataDirectory)")
    }
    let lock = try DataFolderLock(path: configuration.lockPath)
    defer { withExtendedLifetime(lock) {} }
    guard let node = try NodeFiles.readIdentity(at: configuration.identityPath) else {
        throw ConfigurationError("no node identity in \(configuration.dataDirectory): a backup is restored into the folder of the node it was taken from")
    }
    do {
        return try Replica.restore(from: file, to: configuration.replicaPath, node: node.identity.id)
    } catch let error as ReplicaError {
        throw ConfigurationError(error.message)
    }
}
