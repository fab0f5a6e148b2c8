import Crypto
import Foundation
import ProgSyncCore
import ProgSyncStore
import Synchronization

/// Who a local commit says made it. Commits travel to every partner, and a staff member's user
/// name is personal data (AVG): with `author.share: pseudonym` the commit carries a pseudonym
/// that is stable per user on this node, and only this node keeps the name behind it.
final class CommitAuthors: Sendable {
    let sharing: DaemonConfiguration.AuthorSharing
    let replica: Replica
    /// The HMAC key, as bytes: SymmetricKey is not Sendable.
    private let key: [UInt8]
    /// Pseudonyms already remembered, so a write costs no extra transaction after the first.
    private let remembered = Mutex<Set<String>>([])

    init(sharing: DaemonConfiguration.AuthorSharing, replica: Replica) {
        self.sharing = sharing
        self.replica = replica
        // Derived from the node's private key: as secret and as lasting as the node itself, and
        // different on every node, so partners cannot link one person's pseudonyms across nodes.
        key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: replica.identity.privateKey.rawRepresentation),
            info: Array("progsync author pseudonym v1".utf8), outputByteCount: 32
        ).withUnsafeBytes { Array($0) }
    }

    /// The author for `name` when nothing has to be stored first; nil when it has to.
    func knownAuthor(forUser name: String) -> String? {
        guard sharing == .pseudonym else { return name }
        let pseudonym = Self.pseudonym(of: name, key: key)
        return remembered.withLock { $0.contains(pseudonym) } ? pseudonym : nil
    }

    /// The author to put on a commit made by the local user `name`.
    func commitAuthor(forUser name: String) throws -> String {
        guard sharing == .pseudonym else { return name }
        let pseudonym = Self.pseudonym(of: name, key: key)
        guard !remembered.withLock({ $0.contains(pseudonym) }) else { return pseudonym }
        // Stored before the commit is made, so the local history never shows a bare pseudonym.
        try replica.rememberLocalAuthor(pseudonym: pseudonym, name: name)
        remembered.withLock { _ = $0.insert(pseudonym) }
        return pseudonym
    }

    /// `u-` and 40 bits of HMAC-SHA256: short enough to read, and collisions are negligible for
    /// the few hundred users of one node.
    static func pseudonym(of name: String, key: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(name.utf8), using: SymmetricKey(data: key))
        return "u-" + Hex.encode(Array(mac).prefix(5))
    }
}
