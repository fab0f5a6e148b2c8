import Foundation
import GRDB
import Logging
import ProgSyncCore

extension Replica {
    /// Numbered migrations; never edit one that has shipped, add the next.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            // Every authenticated commit, in arrival order (lsn): the changes feed for peers.
            // status 0 = applied, 1 = authentic but refused (kept so the origin's chain relays).
            try db.execute(sql: """
                CREATE TABLE commits (
                    lsn INTEGER PRIMARY KEY,
                    origin TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    stamp INTEGER NOT NULL,
                    author TEXT NOT NULL,
                    hash BLOB NOT NULL,
                    body BLOB NOT NULL,
                    sig BLOB NOT NULL,
                    status INTEGER NOT NULL DEFAULT 0
                );
                CREATE UNIQUE INDEX commits_by_origin ON commits(origin, seq);
                -- The version vector: highest contiguous seq per origin and that commit's hash.
                CREATE TABLE heads (
                    origin TEXT PRIMARY KEY,
                    seq INTEGER NOT NULL,
                    hash BLOB NOT NULL
                ) WITHOUT ROWID;
                -- Current winners.
                CREATE TABLE fields (
                    record TEXT NOT NULL,
                    field TEXT NOT NULL,
                    value TEXT NOT NULL,
                    stamp INTEGER NOT NULL,
                    origin TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    PRIMARY KEY (record, field)
                ) WITHOUT ROWID;
                -- Conflict losers: versions nobody superseded that lost to the winner.
                CREATE TABLE conflicts (
                    record TEXT NOT NULL,
                    field TEXT NOT NULL,
                    origin TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    stamp INTEGER NOT NULL,
                    value TEXT NOT NULL,
                    PRIMARY KEY (record, field, origin, seq)
                ) WITHOUT ROWID;
                -- Which commits touched a record, for history.
                CREATE TABLE record_commits (
                    record TEXT NOT NULL,
                    lsn INTEGER NOT NULL,
                    PRIMARY KEY (record, lsn)
                ) WITHOUT ROWID;
                -- Held commits (unknown key, gap, missing dependency, clock ahead): not applied, not dropped.
                CREATE TABLE held (
                    hash BLOB PRIMARY KEY,
                    origin TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    stamp INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    received_at INTEGER NOT NULL,
                    body BLOB NOT NULL,
                    sig BLOB NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX held_by_origin ON held(origin, seq);
                -- Refused commits with the reason; never applied.
                CREATE TABLE rejected (
                    id INTEGER PRIMARY KEY,
                    origin TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    hash BLOB NOT NULL,
                    reason TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    at INTEGER NOT NULL,
                    body BLOB NOT NULL,
                    sig BLOB NOT NULL
                );
                CREATE UNIQUE INDEX rejected_by_hash ON rejected(hash);
                -- Digest leaves, maintained with every merge.
                CREATE TABLE digest_buckets (
                    bucket INTEGER PRIMARY KEY,
                    sum BLOB NOT NULL
                );
                CREATE TABLE meta (
                    key TEXT PRIMARY KEY,
                    value
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v2-peers") { db in
            // Replication cursors per peer node: how far we pulled its feed (its lsn) and how far
            // our own feed has been pushed to it (our lsn). Written in the transaction that applies
            // or acknowledges the commits they count.
            try db.execute(sql: """
                CREATE TABLE peer_cursors (
                    peer TEXT PRIMARY KEY,
                    pulled INTEGER NOT NULL DEFAULT 0,
                    pushed INTEGER NOT NULL DEFAULT 0
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v3-peer-vectors") { db in
            // The last version vector each peer told us: what it lacks, for bundles and status.
            try db.execute(sql: """
                CREATE TABLE peer_vectors (
                    peer TEXT PRIMARY KEY,
                    vector TEXT NOT NULL,
                    at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX commits_by_stamp ON commits(stamp);
                """)
        }
        migrator.registerMigration("v4-digest-covers-conflicts") { db in
            // The digest now sums conflict losers too: recompute the leaves once.
            let (buckets, _) = try Replica.sumBuckets(db)
            try db.execute(sql: "DELETE FROM digest_buckets")
            for (i, sum) in buckets.enumerated() where sum != .zero {
                try db.execute(sql: "INSERT INTO digest_buckets (bucket, sum) VALUES (?, ?)", arguments: [i, Data(sum.bytes)])
            }
        }
        migrator.registerMigration("v5-causal-pasts") { db in
            // What each origin's chain has named, for the ownership rule (#11). Filled from the
            // log once, so an upgraded node judges new commits exactly as a freshly synced one.
            try db.execute(sql: """
                CREATE TABLE causal_pasts (
                    origin TEXT PRIMARY KEY,
                    past TEXT NOT NULL
                ) WITHOUT ROWID;
                """)
            var pasts: [String: CausalPast] = [:]
            let rows = try Row.fetchCursor(db, sql: "SELECT origin, body FROM commits ORDER BY origin, seq")
            while let row = try rows.next() {
                guard let commit = try? Commit(canonicalBytes: [UInt8](row[1] as Data)) else { continue }
                let origin: String = row[0]
                pasts[origin, default: CausalPast()].extend(with: commit)
            }
            for (origin, past) in pasts {
                try db.execute(sql: "INSERT INTO causal_pasts (origin, past) VALUES (?, ?)", arguments: [origin, past.text])
            }
        }
        migrator.registerMigration("v6-local-authors") { db in
            // Who this node's pseudonymous commit authors are (author.share: pseudonym). Local
            // only: never replicated, so partners see the pseudonym and this node the name.
            try db.execute(sql: """
                CREATE TABLE local_authors (
                    origin TEXT NOT NULL,
                    pseudonym TEXT NOT NULL,
                    name TEXT NOT NULL,
                    PRIMARY KEY (origin, pseudonym)
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v7-newer-schema") { db in
            // Applied commits written under a schema newer than this node's: judged again on
            // each start, so an upgrade applies them fully with no operator action.
            try db.execute(sql: """
                CREATE TABLE newer_schema (
                    lsn INTEGER PRIMARY KEY,
                    origin TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    schema INTEGER NOT NULL,
                    gaps TEXT NOT NULL
                );
                """)
        }
        migrator.registerMigration("v8-verified-record-sums") { db in
            // Each record's entry sum as of the last self-check that found its bucket sound: a
            // local hint that tells a repair which records of a diverged bucket changed, so it
            // reads and writes only those. Never replicated; the digest stays the judge.
            try db.execute(sql: """
                CREATE TABLE record_sums (
                    record TEXT PRIMARY KEY,
                    sum BLOB NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v9-web-users") { db in
            // The web app's people (`progsync users`). Local only, like local_authors: never in a
            // commit, a bundle or the digest, so no partner ever sees a name or a password hash.
            try db.execute(sql: """
                CREATE TABLE web_users (
                    name TEXT PRIMARY KEY,
                    role TEXT NOT NULL,
                    password_hash TEXT NOT NULL,
                    totp_secret TEXT,
                    disabled INTEGER NOT NULL DEFAULT 0,
                    created INTEGER NOT NULL,
                    last_visit INTEGER
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v10-unknown-node") { db in
            // The hold for a commit whose node no coordinator has admitted yet is named for the
            // node (#12): `unknown-node`, once `unknown-key`.
            try db.execute(sql: "UPDATE held SET reason = 'unknown-node' WHERE reason = 'unknown-key'")
        }
        migrator.registerMigration("v11-withheld-index") { db in
            // Every merged membership record asks which commits a retirement withholds (status 2);
            // without an index that read the whole log each time.
            try db.execute(sql: "CREATE INDEX commits_withheld ON commits(origin) WHERE status = 2")
        }
        return migrator
    }
}

/// The commits an origin's chain has named so far, as the highest seq per origin: its own
/// commits and every commit they referenced (`supersedes`, `ownerRefs`). Deterministic: it
/// follows the origin's chain, which every node applies in order.
struct CausalPast: Sendable, Equatable {
    var seqs: [NodeID: UInt64] = [:]

    mutating func extend(with commit: Commit) {
        CommitRules.extendCausalPast(&seqs, with: commit)
    }

    var text: String {
        seqs.sorted { $0.key < $1.key }.map { "\($0.key.rawValue):\($0.value)" }.joined(separator: ",")
    }

    init() {}

    init?(text: String) {
        for part in text.split(separator: ",") {
            let pair = part.split(separator: ":")
            guard pair.count == 2, let id = NodeID(String(pair[0])), let seq = UInt64(pair[1]) else { return nil }
            seqs[id] = seq
        }
    }
}

extension Replica {
    /// Refuses a replica written by a newer build (it went through migrations this build does not
    /// know): opening it would silently run old code on a newer schema. Returns the applied ones.
    static func checkNotNewer(_ db: Database, path: String) throws -> [String] {
        let applied = try migrator.appliedIdentifiers(db)
        let known = Set(migrator.migrations)
        let unknown = applied.subtracting(known)
        guard unknown.isEmpty else {
            throw ReplicaError(.newerDatabase, "the replica \(path) was written by a newer progsync (schema \(unknown.sorted().joined(separator: ", ")) is unknown to this build); install that version again or restore a backup made by this one")
        }
        return migrator.migrations.filter(applied.contains)
    }

    /// Runs the pending migrations, each in its own transaction (GRDB's migrator). An existing
    /// replica is first copied beside itself (online backup, checked), so a failed or regretted
    /// upgrade can go back: `<replica>.before-<first pending migration>-<time>`.
    static func migrate(_ pool: any DatabaseWriter, path: String, logger: Logger) throws {
        let applied = try pool.read { db in try checkNotNewer(db, path: path) }
        let pending = migrator.migrations.filter { !applied.contains($0) }
        if path != ":memory:", !applied.isEmpty, let first = pending.first {
            let copy = "\(path).before-\(first)-\(BackupName.timestamp(wallClockMilliseconds()))"
            let check = try writeCopy(of: pool, to: copy, overwrite: false, manifest: nil)
            logger.info("copied the replica before migrating it", metadata: [
                "copy": "\(copy)", "migrations": "\(pending.joined(separator: ","))", "digest": "\(Hex.encode(check.digest))"])
        }
        try migrator.migrate(pool)
    }
}

/// File-name parts for copies of the replica.
public enum BackupName {
    /// `20261202T161500Z`: sorts by time and needs no quoting.
    public static func timestamp(_ milliseconds: UInt64) -> String {
        let iso = Stamp.iso8601(milliseconds: milliseconds)
        return String(iso.prefix(19).filter { $0 != "-" && $0 != ":" }) + "Z"
    }
}
