import Foundation
import GRDB
import ProgSyncCore

/// What a checked copy of a replica holds: its digest recomputed from its rows, its size, the
/// migrations it went through, and the manifest `backup` wrote into it (nil for a plain copy).
public struct ReplicaFileCheck: Sendable {
    public var path: String
    public var bytes: Int64
    /// Recomputed from the copy's fields and conflicts, and equal to the digest it stores; for a
    /// replica that still has migrations to run, the stored one (`digestRecomputed` false).
    public var digest: [UInt8]
    public var digestRecomputed: Bool
    public var migrations: [String]
    public var manifest: BackupManifest?
}

/// Written into every backup's `meta` table: whose replica it is and when it was taken, so a
/// restore can refuse another node's file before it replaces anything.
public struct BackupManifest: Sendable, Equatable {
    public var node: NodeID
    public var org: String
    public var takenAt: UInt64
    public var digest: [UInt8]

    var json: JSONValue {
        .object(["node": .string(node.rawValue), "org": .string(org), "takenAt": .int(Int64(takenAt)), "digest": .string(Hex.encode(digest))])
    }

    init(node: NodeID, org: String, takenAt: UInt64, digest: [UInt8]) {
        (self.node, self.org, self.takenAt, self.digest) = (node, org, takenAt, digest)
    }

    init?(text: String) {
        guard let json = try? JSONParser.parse(Array(text.utf8), maxDepth: 4),
            let node = json["node"]?.stringValue.flatMap({ NodeID($0) }), let org = json["org"]?.stringValue,
            let at = json["takenAt"]?.intValue, at >= 0, let digest = json["digest"]?.stringValue.flatMap({ Hex.decode($0) })
        else { return nil }
        self.init(node: node, org: org, takenAt: UInt64(at), digest: digest)
    }
}

extension Replica {
    /// A consistent copy of the live replica at `path`, taken with SQLite's online backup while
    /// writers go on (one step: the copy is one read snapshot). It is written beside the target
    /// under a temporary name, checked (`checkCopy`), synced and only then renamed into place, so
    /// `path` never holds half a backup.
    public func backup(to path: String, overwrite: Bool = false) throws -> ReplicaFileCheck {
        let manifest: @Sendable (Database) throws -> BackupManifest = { [identity, configuration] db in
            let stored = try Self.storedDigest(db)
            return BackupManifest(node: identity.id, org: configuration.org, takenAt: configuration.now(), digest: stored)
        }
        return try Self.writeCopy(of: pool, to: path, overwrite: overwrite, manifest: manifest)
    }

    /// Copies `source` to `path` through a temporary file, checks the copy, then renames it.
    static func writeCopy(
        of source: any DatabaseReader, to path: String, overwrite: Bool,
        manifest: (@Sendable (Database) throws -> BackupManifest)?
    ) throws -> ReplicaFileCheck {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
            throw ReplicaError(.invalid, "no folder \(folder) for the backup")
        }
        if !overwrite, FileManager.default.fileExists(atPath: path) {
            throw ReplicaError(.exists, "\(path) already exists (use --force to replace it)")
        }
        let temp = folder + "/." + url.lastPathComponent + ".partial-" + UUID().uuidString.prefix(8)
        defer { for suffix in ["", "-journal"] { unlink(temp + suffix) } }
        do {
            let copy = try DatabaseQueue(path: temp)
            try source.backup(to: copy)
            try copy.writeWithoutTransaction { db in
                // One self-contained file: no -wal beside it to lose when it is moved.
                try db.execute(sql: "PRAGMA journal_mode = DELETE")
                if let manifest {
                    try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('backup', ?)",
                                   arguments: [try manifest(db).json.canonicalString])
                }
            }
            try copy.close()
        } catch let error as ReplicaError {
            throw error
        } catch {
            throw ReplicaError(.invalid, "cannot write \(path): \(Self.describe(error))")
        }
        var check = try checkCopy(at: temp)
        try syncFile(temp)
        guard rename(temp, path) == 0 else {
            throw ReplicaError(.invalid, "cannot move the backup to \(path): \(String(cString: strerror(errno)))")
        }
        try? syncFile(folder)
        check.path = path
        return check
    }

    /// Checks a replica file that no process has open: SQLite's `integrity_check`, a progsync
    /// replica made by migrations this build knows, and its digest recomputed from its rows equal
    /// to the digest it stores (and to its manifest's, when it has one). The digest is recomputed
    /// only on a fully migrated replica: this build's digest rule may differ from the one an older
    /// schema was summed with (v4 added conflicts), and the daemon's migration settles that.
    public static func checkCopy(at path: String) throws -> ReplicaFileCheck {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
            throw ReplicaError(.notFound, "no file \(path)")
        }
        var config = Configuration()
        config.readonly = true
        do {
            let queue = try DatabaseQueue(path: path, configuration: config)
            defer { try? queue.close() }
            return try queue.read { db in
                let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
                guard integrity == ["ok"] else {
                    throw ReplicaError(.corrupt, "\(path) fails SQLite's integrity check: \(integrity.prefix(3).joined(separator: "; "))")
                }
                guard try db.tableExists("commits"), try db.tableExists("digest_buckets"), try db.tableExists("meta") else {
                    throw ReplicaError(.corrupt, "\(path) is not a progsync replica")
                }
                let migrations = try Self.checkNotNewer(db, path: path)
                let stored = try storedDigest(db)
                let current = migrations == migrator.migrations
                let recomputed = current ? ReplicaDigest.root(try sumBuckets(db).buckets) : stored
                guard recomputed == stored else {
                    throw ReplicaError(.corrupt, "\(path): the digest recomputed from its records (\(Hex.encode(recomputed).prefix(16))) differs from the one it stores (\(Hex.encode(stored).prefix(16)))")
                }
                let manifest = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'backup'").flatMap(BackupManifest.init(text:))
                if let manifest, manifest.digest != recomputed {
                    throw ReplicaError(.corrupt, "\(path): its digest differs from the one recorded when the backup was taken")
                }
                return ReplicaFileCheck(path: path, bytes: (attributes[.size] as? Int64) ?? Int64((attributes[.size] as? Int) ?? 0),
                                        digest: recomputed, digestRecomputed: current, migrations: migrations, manifest: manifest)
            }
        } catch let error as ReplicaError {
            throw error
        } catch {
            throw ReplicaError(.corrupt, "\(path) cannot be read as a replica: \(Self.describe(error))")
        }
    }

    /// The digest root over the leaves a replica file stores.
    static func storedDigest(_ db: Database) throws -> [UInt8] {
        var buckets = [BucketSum](repeating: .zero, count: ReplicaDigest.bucketCount)
        for row in try Row.fetchAll(db, sql: "SELECT bucket, sum FROM digest_buckets") {
            let i: Int = row[0]
            guard buckets.indices.contains(i) else { throw ReplicaError(.corrupt, "digest bucket \(i) out of range") }
            buckets[i] = BucketSum(bytes: [UInt8](row[1] as Data))
        }
        return ReplicaDigest.root(buckets)
    }

    /// An SQLite error without statement arguments (they may hold record contents).
    static func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError { return error.message ?? "SQLite error \(error.resultCode.rawValue)" }
        return "\(error)"
    }

    static func syncFile(_ path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ReplicaError(.invalid, "cannot open \(path)") }
        defer { try? handle.close() }
        do { try handle.synchronize() } catch { throw ReplicaError(.invalid, "cannot sync \(path): \(error.localizedDescription)") }
    }
}
