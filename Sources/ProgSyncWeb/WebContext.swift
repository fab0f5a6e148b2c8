import Hummingbird
import NIOCore

/// A request context the web app can serve from: it knows the client's address (for the login
/// throttle, the log and the trusted proxy), nil on the local socket.
public protocol WebRequestContext: RequestContext {
    var clientAddress: String? { get }
}

/// The context of the app's own listener.
public struct WebListenerContext: WebRequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    // Forms are small; a larger body is refused before it is read.
    public var maxUploadSize: Int { 256 << 10 }

    public var clientAddress: String? { channel.remoteAddress?.ipAddress }
}
