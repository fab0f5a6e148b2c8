import Crypto
import Foundation
import HummingbirdBcrypt
import NIOPosix

/// How people's passwords are kept: bcrypt (cost 12) over the base64 SHA-256 of the password.
/// bcrypt reads only 72 bytes; hashing first lets a long passphrase count in full and keeps
/// the documented limits plain (12 to 1024 characters), with no byte-length edge.
public enum Passwords {
    public static let minimumLength = 12
    public static let maximumLength = 1024

    /// Nil when the password is acceptable, else what is wrong, for a 422.
    /// Counted in Unicode scalars, as JSON Schema's `minLength` counts.
    public static func problem(_ password: String) -> String? {
        let length = password.unicodeScalars.count
        if length < minimumLength { return "password: at least \(minimumLength) characters" }
        if length > maximumLength { return "password: at most \(maximumLength) characters" }
        return nil
    }

    public static func hash(_ password: String) async throws -> String {
        let input = prehash(password)
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(input, cost: 12) }
    }

    public static func verify(_ password: String, hash: String) async throws -> Bool {
        let input = prehash(password)
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(input, hash: hash) }
    }

    static func prehash(_ password: String) -> String {
        Data(SHA256.hash(data: Data(password.utf8))).base64EncodedString()
    }

    /// Compared against when the name is unknown, so timing does not tell which names exist.
    static let dummyHash = Bcrypt.hash(prehash("progsync: no such user"), cost: 12)
}
