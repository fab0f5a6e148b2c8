import Foundation
import HTTPTypes
import Hummingbird
import ProgSyncCore

/// The peer protocol's versions: the one a node speaks and the oldest it still answers. Two
/// nodes talk when their ranges overlap, so a newer node stays compatible with older ones for
/// as long as it keeps their version in its range; a node never refuses a partner for being
/// newer, only for a range that leaves no common version. Every request names the caller's
/// range in headers (an old node that sends none speaks protocol 1); `hello` names the answerer's.
///
/// Protocol 2 is the first with commit format 2 (a schema version in each commit): protocol-1
/// nodes cannot read those commits, so they are refused with a message rather than fed.
struct PeerProtocol: Sendable, Equatable, CustomStringConvertible {
    var version: Int
    var minimum: Int

    static let thisBuild = PeerProtocol(version: 2, minimum: 2)
    static let versionHeaderName = "Progsync-Protocol"
    static let minimumHeaderName = "Progsync-Protocol-Min"
    static let versionHeader = HTTPField.Name(versionHeaderName)!
    static let minimumHeader = HTTPField.Name(minimumHeaderName)!

    /// This build's range. `PROGSYNC_TEST_PEER_PROTOCOL=MIN-MAX` replaces it, only so that the
    /// incompatible-protocol test can run two real daemons of one build; never set it otherwise.
    static let local: PeerProtocol = {
        guard let text = ProcessInfo.processInfo.environment["PROGSYNC_TEST_PEER_PROTOCOL"] else { return thisBuild }
        let parts = text.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 1, parts[0] <= parts[1] else { return thisBuild }
        return PeerProtocol(version: parts[1], minimum: parts[0])
    }()

    var description: String { minimum == version ? "\(version)" : "\(minimum)–\(version)" }

    func isCompatible(with other: PeerProtocol) -> Bool { max(minimum, other.minimum) <= min(version, other.version) }

    /// Why two ranges cannot talk, and which side must upgrade: the one whose newest version
    /// is below the other's oldest.
    func incompatibility(with other: PeerProtocol, me: String, them: String) -> String {
        let behind = other.version < minimum ? them : me
        return "peer protocol mismatch: \(me) speaks \(description), \(them) speaks \(other.description); upgrade progsync on \(behind)"
    }

    /// A caller's range from its request headers; none means protocol 1 (releases before the headers).
    init(headers: HTTPFields) {
        let version = headers[Self.versionHeader].flatMap { Int($0) } ?? 1
        minimum = headers[Self.minimumHeader].flatMap { Int($0) } ?? version
        self.version = max(version, minimum)
    }

    /// An answerer's range from its `hello`.
    init?(hello: JSONValue) {
        guard let version = hello["protocol"]?.intValue.map(Int.init) else { return nil }
        self.version = version
        minimum = hello["minProtocol"]?.intValue.map(Int.init) ?? version
    }

    init(version: Int, minimum: Int) {
        self.version = version
        self.minimum = minimum
    }
}

/// Refuses a caller whose protocol range does not overlap this node's, before any route runs:
/// 426 with a JSON body that says who must upgrade; nothing is read or applied.
struct PeerProtocolMiddleware: RouterMiddleware {
    typealias Context = PeerRequestContext
    /// This node as the caller should read it in the message.
    let me: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let theirs = PeerProtocol(headers: request.headers)
        guard PeerProtocol.local.isCompatible(with: theirs) else {
            throw APIError(.upgradeRequired, "protocol-incompatible", PeerProtocol.local.incompatibility(with: theirs, me: me, them: "your node"))
        }
        return try await next(request, context)
    }
}
