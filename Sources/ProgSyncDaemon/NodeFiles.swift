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

    /// Refuses a data folder that others may write to: they could swap the identity or the replica.
    public static func checkDataFolder(_ path: String) throws {
        guard let mode = try permissions(of: path) else { return }
        if mode & 0o022 != 0 {
            throw ConfigurationError("data folder \(path) is writable by other users (mode \(octal(mode))); fix it with: chmod 700 \(path)")
        }
    }

    /// Refuses a private key that others may read or change. Group read is allowed, for keys kept
    /// in a shared key store such as Debian's ssl-cert group.
    public static func checkKeyFile(_ path: String) throws {
        guard let mode = try permissions(of: path) else { return }
        if mode & 0o027 != 0 {
            throw ConfigurationError("private key \(path) is open to other users (mode \(octal(mode))); fix it with: chmod 600 \(path)")
        }
    }

    /// Makes the replica and its WAL files readable by the owner only: they hold every record.
    /// A missing replica is created empty with mode 0600 (SQLite gives its -wal and -shm files the
    /// database file's mode); files from older versions, made 0644, are tightened.
    public static func makeReplicaPrivate(_ path: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ConfigurationError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fchmod(fd, 0o600) == 0 else { throw ConfigurationError("cannot make \(path) private: \(String(cString: strerror(errno)))") }
        for companion in [path + "-wal", path + "-shm"] where chmod(companion, 0o600) != 0 && errno != ENOENT {
            throw ConfigurationError("cannot make \(companion) private: \(String(cString: strerror(errno)))")
        }
    }

    /// The permission bits of a file, or nil when it does not exist.
    static func permissions(of path: String) throws -> Int? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        } catch {
            throw ConfigurationError("cannot read the permissions of \(path): \(error.localizedDescription)")
        }
    }

    static func octal(_ mode: Int) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
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
