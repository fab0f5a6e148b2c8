import Foundation
import GRDB
import ProgSyncCore

extension Membership {
    /// SQL that holds a record id in `column` to the records with `prefix`, as a range an index
    /// on the column serves (the prefix's last character plus one ends it: `node:` … `node;`).
    static func sqlPrefixRange(_ column: String, _ prefix: String) -> String {
        let end = String(prefix.dropLast()) + String(UnicodeScalar(prefix.unicodeScalars.last!.value + 1)!)
        return "(\(column) >= '\(prefix)' AND \(column) < '\(end)')"
    }

    /// SQL that holds `column` to the membership records (`node:…`, `org:…`): the one copy in SQL
    /// of `isMembershipRecord`.
    static func sqlRecords(_ column: String) -> String {
        "(\(sqlPrefixRange(column, nodePrefix)) OR \(sqlPrefixRange(column, orgPrefix)))"
    }
}

extension Replica {
    /// The registry in force as this database holds it: the trust root, the membership records'
    /// current fields, and each node's retirement over every applied version (`Membership`).
    static func membershipRegistry(_ db: Database, trustRoot: PartnerRegistry) throws -> PartnerRegistry {
        let records = try membershipFields(db)
        var versions: [NodeID: [JSONValue]] = [:]
        let bodies = try Data.fetchAll(db, sql: """
            SELECT DISTINCT c.body FROM record_commits rc JOIN commits c ON c.lsn = rc.lsn
            WHERE \(Membership.sqlPrefixRange("rc.record", Membership.nodePrefix)) AND c.status = 0
            """)
        for body in bodies {
            guard let commit = try? Commit.Layout([UInt8](body)) else { continue }
            for change in commit.changes where change.field == "retiredAfter" {
                guard Membership.kind(ofRecord: change.record) == .node,
                      let id = NodeID(String(change.record.dropFirst(Membership.nodePrefix.count))),
                      let value = try? JSONParser.parse(change.valueBytes)
                else { continue }
                versions[id, default: []].append(value)
            }
        }
        let retired = versions.compactMapValues(Membership.retirement(of:))
        return Membership.registry(trustRoot: trustRoot, records: records, retired: retired)
    }

    public struct MembershipLogEntry: Sendable {
        public var ref: CommitRef
        public var author: String
        public var stamp: Stamp
        public var changes: [(record: String, field: String, value: JSONValue)]
    }

    /// Every applied commit that changed a membership record, in arrival order, with only
    /// those changes: `partners log`.
    public func membershipLog() throws -> [MembershipLogEntry] {
        try pool.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT DISTINCT c.lsn, c.body, c.author FROM record_commits rc JOIN commits c ON c.lsn = rc.lsn
                WHERE \(Membership.sqlRecords("rc.record")) AND c.status = 0
                ORDER BY c.lsn
                """)
            return try rows.map { row in
                let commit = try Commit(canonicalBytes: [UInt8](row[1] as Data))
                let authors = row[2] as String
                return MembershipLogEntry(
                    ref: commit.ref, author: authors, stamp: commit.stamp,
                    changes: commit.changes.filter { Membership.isMembershipRecord($0.record) }.map { ($0.record, $0.field, $0.value) })
            }
        }
    }

    /// Each membership record's current fields (the winners).
    static func membershipFields(_ db: Database) throws -> [String: [String: JSONValue]] {
        var records: [String: [String: JSONValue]] = [:]
        let rows = try Row.fetchAll(db, sql: """
            SELECT record, field, value FROM fields
            WHERE \(Membership.sqlRecords("record"))
            """)
        for row in rows {
            guard let value = try? JSONParser.parse(row[2] as String) else { continue }
            records[row[0], default: [:]][row[1]] = value
        }
        return records
    }
}

extension ApplyContext {
    /// Puts the registry the database now describes in force, after a membership record was
    /// merged (or the trust root changed). Where a node's retirement moved, its commits beyond
    /// it are withheld, or those back within it merged again, and their records are rebuilt
    /// from the log: what is merged is then a function of the commits held and the
    /// membership alone, whatever the arrival order. Withholding a coordinator's commit can
    /// change the membership again, so this runs until nothing moves.
    mutating func refreshMembership() throws {
        for _ in 0..<16 {
            state.registry = try Replica.membershipRegistry(db, trustRoot: state.trustRoot)
            membershipChanged = true
            let records = try settleRetirements()
            if records.isEmpty { return }
            _ = try rebuild(buckets: [], records: records, divergence: [:])
        }
        throw ReplicaError(.corrupt, "membership did not settle after 16 rounds of retirements")
    }

    /// Makes each origin's merged commits agree with its retirement; returns the records touched.
    mutating func settleRetirements() throws -> Set<String> {
        var records = Set<String>()
        var origins = Set(state.registry.nodes.values.filter(\.isRetired).map(\.id.rawValue))
        origins.formUnion(try String.fetchAll(db, sql: "SELECT DISTINCT origin FROM commits WHERE status = 2"))
        for origin in origins.sorted() {
            let cutoff = NodeID(origin).flatMap { state.registry.node($0)?.retiredAfter }.map { Int64($0) } ?? Int64.max
            // Merged beyond the retirement: withheld, and listed as undone.
            let beyond = try Row.fetchAll(db, sql: "SELECT lsn, body, sig FROM commits WHERE origin = ? AND seq > ? AND status = 0",
                                          arguments: [origin, cutoff])
            for row in beyond {
                let signed = try SignedCommit(canonicalBytes: [UInt8](row[1] as Data), signature: [UInt8](row[2] as Data))
                try db.execute(sql: "UPDATE commits SET status = 2 WHERE lsn = ?", arguments: [row[0] as Int64])
                try logRejection(signed, CommitVerdict(.retired, "undone: node \(origin) was retired after its commit \(cutoff)"))
                records.formUnion(signed.commit.changes.map(\.record))
            }
            // Withheld but within the retirement now (it moved later: only when the commit that
            // set it was itself withheld): merged again.
            let within = try Row.fetchAll(db, sql: "SELECT lsn, body FROM commits WHERE origin = ? AND seq <= ? AND status = 2",
                                          arguments: [origin, cutoff])
            for row in within {
                let commit = try Commit(canonicalBytes: [UInt8](row[1] as Data))
                try db.execute(sql: "UPDATE commits SET status = 0 WHERE lsn = ?", arguments: [row[0] as Int64])
                try db.execute(sql: "DELETE FROM rejected WHERE origin = ? AND seq = ? AND reason = 'retired'",
                               arguments: [origin, Int64(commit.seq)])
                // Withheld on arrival, it was never indexed by record.
                for record in Set(commit.changes.map(\.record)) {
                    try db.execute(sql: "INSERT OR IGNORE INTO record_commits (record, lsn) VALUES (?, ?)", arguments: [record, row[0] as Int64])
                }
                records.formUnion(commit.changes.map(\.record))
            }
        }
        return records
    }
}

extension Replica {
    /// The newest commit of `node`'s own chain in the replica file at `path` (0 when none), read
    /// without opening the replica: for `progsyncd rotate-key`, while no daemon runs.
    public static func headSeq(of node: NodeID, atPath path: String) throws -> UInt64 {
        guard FileManager.default.fileExists(atPath: path) else { return 0 }
        var config = Configuration()
        config.readonly = true
        let queue = try DatabaseQueue(path: path, configuration: config)
        defer { try? queue.close() }
        return try queue.read { db in
            UInt64(try Int64.fetchOne(db, sql: "SELECT seq FROM heads WHERE origin = ?", arguments: [node.rawValue]) ?? 0)
        }
    }
}
