import Foundation
import ProgSyncCore
import ProgSyncStore

/// What `progsyncd rotate-key` did: the node's new identity, and the old one's last commit,
/// after which the coordinator retires it when it admits the new one.
public struct KeyRotation: Sendable {
    public var old: NodeFiles.StoredIdentity
    public var new: NodeFiles.StoredIdentity
    public var oldLastSeq: UInt64
    public var pin: String
    /// The suffix the old identity and TLS files were kept under.
    public var keptAs: String
}

/// `progsyncd rotate-key`: a new node key and TLS certificate for this data folder, the old ones
/// kept beside them. Holds the data-folder lock, so it refuses while the daemon runs. The
/// replica stays: the node's records are its organisation's, so they stay editable under the new
/// key once a coordinator admits it (`progsync partners add` of the request, which also retires
/// the old key after its last commit).
public func rotateNodeKey(configuration: DaemonConfiguration) throws -> KeyRotation {
    guard FileManager.default.fileExists(atPath: configuration.dataDirectory) else {
        throw ConfigurationError("no data folder \(configuration.dataDirectory)")
    }
    let lock = try DataFolderLock(path: configuration.lockPath)
    defer { withExtendedLifetime(lock) {} }
    guard let old = try NodeFiles.readIdentity(at: configuration.identityPath) else {
        throw ConfigurationError("no node identity in \(configuration.dataDirectory) to rotate; progsyncd init makes one")
    }
    let lastSeq = try Replica.headSeq(of: old.identity.id, atPath: configuration.replicaPath)
    let suffix = ".before-rotation-" + Stamp.iso8601(milliseconds: Replica.wallClockMilliseconds())
        .replacingOccurrences(of: ":", with: "-")
    let fm = FileManager.default
    let paths = [configuration.identityPath, configuration.tlsCertificatePath, configuration.tlsKeyPath].filter { fm.fileExists(atPath: $0) }
    for path in paths { try fm.moveItem(atPath: path, toPath: path + suffix) }
    do {
        let new = try NodeFiles.createIdentity(at: configuration.identityPath, org: old.org, name: old.name)
        let tls = try NodeTLSIdentity.create(commonName: old.name ?? new.identity.id.rawValue)
        try tls.write(certificatePath: configuration.tlsCertificatePath, keyPath: configuration.tlsKeyPath)
        return KeyRotation(old: old, new: new, oldLastSeq: lastSeq, pin: tls.pin, keptAs: suffix)
    } catch {
        // Put the old identity back: a half-rotated folder would have no usable key.
        for path in paths {
            try? fm.removeItem(atPath: path)
            try? fm.moveItem(atPath: path + suffix, toPath: path)
        }
        throw error
    }
}

extension NodeFiles {
    /// The join request a coordinator admits with `progsync partners add FILE` (`progsyncd init
    /// --request`, `progsyncd rotate-key`); with `replaces`, the same commit retires the old key.
    public static func joinRequest(_ node: StoredIdentity, pin: String, address: String?,
                                   replaces: (node: NodeID, after: UInt64)? = nil) -> JSONValue {
        var request: [String: JSONValue] = [
            "progsyncJoinRequest": 1, "node": .string(node.identity.id.rawValue), "org": .string(node.org),
            "name": .string(node.name ?? node.identity.id.rawValue), "publicKey": .string(node.identity.publicKeyBase64),
            "certificatePin": .string(pin),
        ]
        if let address { request["address"] = .string(address) }
        if let replaces {
            request["replaces"] = .string(replaces.node.rawValue)
            request["replacesAfter"] = .int(Int64(replaces.after))
        }
        return .object(request)
    }
}
