import Crypto
import Foundation
import ProgSyncCore

/// The node's files in its data folder: identity (private key, org, name) and partner registry.
public enum NodeFiles {
    public struct StoredIdentity: Sendable {
        public var identity: NodeIdentity
        public var org: String
        public var name: String?
    }

    public static func readIdentity(at path: String) throws -> StoredIdentity? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let json = try JSONParser.parse([UInt8](data))
        guard let keyText = json["privateKey"]?.stringValue, let key = Base64.decode(keyText),
            let org = json["org"]?.stringValue
        else { throw ConfigurationError("\(path) is not a progsync identity file") }
        let identity = NodeIdentity(privateKey: try Curve25519.Signing.PrivateKey(rawRepresentation: key))
        return StoredIdentity(identity: identity, org: org, name: json["name"]?.stringValue)
    }

    /// Creates a new identity; refuses to overwrite one, since a node's key is its name to partners.
    public static func createIdentity(at path: String, org: String, name: String?) throws -> StoredIdentity {
        guard ProgrammeSchema.isValidOrgCode(org) else {
            throw ConfigurationError("org must be a lower-case code like politie or comensha ([a-z0-9-]), not \(org)")
        }
        if FileManager.default.fileExists(atPath: path) {
            throw ConfigurationError("\(path) already exists; a node keeps its identity (remove the data folder to start over)")
        }
        let identity = NodeIdentity()
        var object: [String: JSONValue] = [
            "privateKey": .string(Base64.encode(Array(identity.privateKey.rawRepresentation))),
            "org": .string(org), "id": .string(identity.id.rawValue),
            "publicKey": .string(identity.publicKeyBase64),
        ]
        if let name { object["name"] = .string(name) }
        try writePrivate(JSONValue.object(object).prettyString() + "\n", to: path)
        return StoredIdentity(identity: identity, org: org, name: name)
    }

    public static func readRegistry(at path: String) throws -> PartnerRegistry? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            return try PartnerRegistry(json: try JSONParser.parse([UInt8](data)))
        } catch {
            throw ConfigurationError("\(path): \(error)")
        }
    }

    /// A registry holding only this node, its org coordinating: the zero-config single node.
    public static func writeSingleNodeRegistry(at path: String, node: StoredIdentity, certificatePin: String?) throws -> PartnerRegistry {
        let registry = PartnerRegistry(
            nodes: [PartnerRegistry.Node(org: node.org, publicKey: node.identity.publicKey, name: node.name, certificatePin: certificatePin)],
            coordinators: [node.org])
        try (registry.json.prettyString() + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return registry
    }

    static func writePrivate(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw ConfigurationError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            throw ConfigurationError("cannot write \(path)")
        }
    }
}

/// An exclusive lock on the data folder, held for the daemon's life: a second daemon on the same
/// folder would be a second writer of one replica.
final class DataFolderLock {
    let fd: Int32

    init(path: String) throws {
        fd = open(path, O_RDWR | O_CREAT, 0o600)
        guard fd >= 0 else { throw ConfigurationError("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw ConfigurationError("another progsyncd is already running on this data folder\(holder.isEmpty ? "" : " (pid \(holder))")")
        }
        ftruncate(fd, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pwrite(fd, pid, pid.count, 0)
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
