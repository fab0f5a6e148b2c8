import GRDB

/// A person who may use the web app: a viewer reads, an editor edits what this node's org may edit.
public struct WebUser: Sendable, Equatable {
    public enum Role: String, Sendable, CaseIterable {
        case viewer, editor
    }

    public var name: String
    public var role: Role
    /// bcrypt.
    public var passwordHash: String
    /// The TOTP shared secret; nil: no second factor set up.
    public var totpSecret: String?
    public var disabled: Bool
    /// Milliseconds since 1970.
    public var created: Int64
    /// The previous visit's start, for "what changed since my last visit".
    public var lastVisit: Int64?

    public init(name: String, role: Role, passwordHash: String, totpSecret: String? = nil, disabled: Bool = false,
                created: Int64, lastVisit: Int64? = nil) {
        self.name = name
        self.role = role
        self.passwordHash = passwordHash
        self.totpSecret = totpSecret
        self.disabled = disabled
        self.created = created
        self.lastVisit = lastVisit
    }

    /// 1–64 of a-z A-Z 0-9 . _ - @: safe in a commit author (`web:<name>`), a log line and a URL.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D || b == 0x40
        }
    }
}

extension Replica {
    public func webUsers() throws -> [WebUser] {
        try pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM web_users ORDER BY name").compactMap(Self.webUser) }
    }

    public func webUser(named name: String) throws -> WebUser? {
        try pool.read { db in try Row.fetchOne(db, sql: "SELECT * FROM web_users WHERE name = ?", arguments: [name]).flatMap(Self.webUser) }
    }

    /// Adds a user; false when the name is taken (nothing changed).
    public func addWebUser(_ user: WebUser) throws -> Bool {
        try pool.write { db in
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO web_users (name, role, password_hash, totp_secret, disabled, created, last_visit)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [user.name, user.role.rawValue, user.passwordHash, user.totpSecret, user.disabled, user.created, user.lastVisit])
            return db.changesCount == 1
        }
    }

    /// Changes one user in place; false when there is no such user.
    public func updateWebUser(named name: String, _ change: (inout WebUser) -> Void) throws -> Bool {
        try pool.write { db in
            guard var user = try Row.fetchOne(db, sql: "SELECT * FROM web_users WHERE name = ?", arguments: [name]).flatMap(Self.webUser) else {
                return false
            }
            change(&user)
            try db.execute(
                sql: "UPDATE web_users SET role = ?, password_hash = ?, totp_secret = ?, disabled = ?, last_visit = ? WHERE name = ?",
                arguments: [user.role.rawValue, user.passwordHash, user.totpSecret, user.disabled, user.lastVisit, name])
            return true
        }
    }

    static func webUser(_ row: Row) -> WebUser? {
        guard let role = WebUser.Role(rawValue: row["role"]) else { return nil }
        return WebUser(name: row["name"], role: role, passwordHash: row["password_hash"], totpSecret: row["totp_secret"],
                       disabled: row["disabled"], created: row["created"], lastVisit: row["last_visit"])
    }
}
