import Foundation
import Glibc
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The request context of the local API: it knows the Unix user on the other end of the socket,
/// which becomes the author of the commits the request makes (§6).
struct LocalRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel
    /// The error this request was answered with, for the audit log (shared by every copy).
    let refusal = NIOLockedValueBox<APIError?>(nil)

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    // Imports may be large; each route still applies its own, smaller limit.
    var maxUploadSize: Int { 256 << 20 }

    /// The peer's user name (or `uid:N`) from SO_PEERCRED.
    func author() async -> String {
        guard let provider = channel as? any SocketOptionProvider else { return "unknown" }
        let credentials: PeerCredentials
        do {
            credentials = try await provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED)
            ).get()
        } catch {
            return "unknown"
        }
        return Self.userName(uid: credentials.uid)
    }

    static func userName(uid: uid_t) -> String {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        if getpwuid_r(uid, &pwd, &buffer, buffer.count, &result) == 0, result != nil, let name = pwd.pw_name {
            return String(cString: name)
        }
        return "uid:\(uid)"
    }
}

/// `struct ucred` from <sys/socket.h>, which Glibc's Swift module hides behind _GNU_SOURCE.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
