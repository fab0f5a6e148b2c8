import Crypto
import Foundation
import ProgSyncCore
import Synchronization

/// Signed-in sessions, in memory: a restart signs everyone out, which is the safe side. The id is
/// 256 random bits; each session has its own CSRF token.
final class SessionStore: Sendable {
    struct Session: Sendable {
        var id: String
        /// nil: not signed in yet (the login form's session, for its CSRF token).
        var user: String?
        var csrf: String
        var lastSeen: UInt64
        /// The previous visit's start, for "changed since my last visit".
        var previousVisit: Int64?
    }

    private let sessions = Mutex<[String: Session]>([:])
    static let maxSessions = 10_000
    let idleMilliseconds: UInt64
    let now: @Sendable () -> UInt64

    init(idleSeconds: Int, now: @escaping @Sendable () -> UInt64) {
        idleMilliseconds = UInt64(idleSeconds) * 1000
        self.now = now
    }

    static func token() -> String {
        Hex.encode(Array(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }))
    }

    func create(user: String?, previousVisit: Int64? = nil) -> Session {
        let session = Session(id: Self.token(), user: user, csrf: Self.token(), lastSeen: now(), previousVisit: previousVisit)
        sessions.withLock { s in
            let t = now()
            s = s.filter { t - min(t, $0.value.lastSeen) < idleMilliseconds }
            // Anyone can open the login page: past the bound, the oldest sessions not signed in go.
            if s.count >= Self.maxSessions {
                let anonymous = s.values.filter { $0.user == nil }.sorted { $0.lastSeen < $1.lastSeen }
                for old in anonymous.prefix(s.count - Self.maxSessions + 1) { s[old.id] = nil }
            }
            s[session.id] = session
        }
        return session
    }

    /// The live session with this id, touched; an idle one is removed and not returned.
    func session(_ id: String) -> Session? {
        let t = now()
        return sessions.withLock { s in
            guard var session = s[id] else { return nil }
            guard t - min(t, session.lastSeen) < idleMilliseconds else {
                s[id] = nil
                return nil
            }
            session.lastSeen = t
            s[id] = session
            return session
        }
    }

    func remove(_ id: String) { sessions.withLock { _ = $0.removeValue(forKey: id) } }

    /// Signs out every session of a user (disabled, or a new password).
    func removeAll(user: String) { sessions.withLock { s in s = s.filter { $0.value.user != user } } }
}

/// Failed logins per name and per client address in a sliding window: past the limit, further
/// tries are refused (even with the right password) until old failures leave the window.
final class LoginThrottle: Sendable {
    private let failures = Mutex<[String: [UInt64]]>([:])
    let limit: Int
    let windowMilliseconds: UInt64

    init(limit: Int, windowSeconds: Int) {
        self.limit = limit
        windowMilliseconds = UInt64(windowSeconds) * 1000
    }

    func isBlocked(_ keys: [String], now: UInt64) -> Bool {
        failures.withLock { f in keys.contains { key in (f[key] ?? []).filter { now - min(now, $0) < windowMilliseconds }.count >= limit } }
    }

    func fail(_ keys: [String], now: UInt64) {
        failures.withLock { f in
            for key in keys { f[key] = (f[key] ?? []).filter { now - min(now, $0) < windowMilliseconds } + [now] }
        }
    }
}
