import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import ProgSyncCore
import ProgSyncStore
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

// The peer port is reachable by anyone on the network, so what a connection may hold is bounded
// before it has proven anything: a connection cap (total and per address) checked as each one
// arrives, a TLS handshake timeout, and an idle timeout. Once a partner is known by its pinned
// certificate, its requests and long polls are capped too (`PeerLoad`).

/// The peer listener's child channel: admission, then TLS with a handshake deadline, then HTTP/1.
struct PeerChildChannel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let http: HTTP1Channel
    let tls: ServerTLS?
    let admission: ConnectionAdmission
    let handshakeTimeout: TimeAmount
    let audit: AuditLog

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(ConnectionAdmissionHandler(admission))
            if let tls {
                let refusal = TLSRefusalAudit(audit: audit)
                try pipeline.addHandler(NIOSSLServerHandler(context: tls.context, customVerificationCallback: refusal.watching(tls.verify), configuration: .init()))
                try pipeline.addHandler(HandshakeTimeoutHandler(timeout: handshakeTimeout))
                try pipeline.addHandler(refusal)
            }
        }.flatMap {
            http.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await http.handle(value: value, logger: logger)
    }
}

/// The listener's TLS: the context made once from the configuration, and the pin check.
struct ServerTLS: Sendable {
    let context: NIOSSLContext
    let verify: TLSChannelConfiguration.CustomVerificationCallback?
}

extension TLSChannelConfiguration {
    func withContext() throws -> ServerTLS {
        ServerTLS(context: try NIOSSLContext(configuration: tlsConfiguration), verify: customVerificationCallback)
    }
}

/// Counts the peer listener's open connections, in total and per remote address.
final class ConnectionAdmission: Sendable {
    struct State {
        var total = 0
        var byAddress: [String: Int] = [:]
        var refusing = false
    }
    let maxConnections: Int
    let maxPerAddress: Int
    let audit: AuditLog
    let logger: Logger
    let state = Mutex(State())

    init(maxConnections: Int, maxPerAddress: Int, audit: AuditLog, logger: Logger) {
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
        self.audit = audit
        self.logger = logger
    }

    /// Takes a place for a new connection; false when the listener is full for it.
    func admit(_ address: String) -> Bool {
        let (admitted, startedRefusing) = state.withLock { s -> (Bool, Bool) in
            let admitted = s.total < maxConnections && s.byAddress[address, default: 0] < maxPerAddress
            if admitted {
                s.total += 1
                s.byAddress[address, default: 0] += 1
            }
            defer { s.refusing = !admitted }
            return (admitted, !admitted && !s.refusing)
        }
        // Once per run of refusals, so a flood does not flood the log too.
        if startedRefusing {
            logger.warning("peer listener full: refusing connections", metadata: [
                "address": "\(address)", "maxConnections": "\(maxConnections)", "maxConnectionsPerAddress": "\(maxPerAddress)",
            ])
            audit.refusedConnection(address: address, reason: "listener-full",
                                    detail: "at most \(maxConnections) connections, \(maxPerAddress) per address; refusing until one closes")
        }
        return admitted
    }

    func release(_ address: String) {
        state.withLock { s in
            s.total -= 1
            s.byAddress[address, default: 1] -= 1
            if s.byAddress[address] == 0 { s.byAddress.removeValue(forKey: address) }
        }
    }

    var openConnections: Int { state.withLock { $0.total } }
}

/// First in the pipeline: closes a connection the listener has no room for before TLS starts.
final class ConnectionAdmissionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let admission: ConnectionAdmission
    private var admitted: String?

    init(_ admission: ConnectionAdmission) { self.admission = admission }

    func channelActive(context: ChannelHandlerContext) {
        let address = context.remoteAddress?.ipAddress ?? "unknown"
        guard admission.admit(address) else {
            context.close(promise: nil)
            return
        }
        admitted = address
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let address = admitted {
            admitted = nil
            admission.release(address)
        }
        context.fireChannelInactive()
    }
}

/// After the TLS handler: records a failed handshake in the audit log, with the client's
/// address and the certificate pin it presented (seen by the verification callback), if any.
final class TLSRefusalAudit: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let audit: AuditLog
    /// The pin presented and whether the callback accepted it.
    let presented = NIOLockedValueBox<(pin: String?, accepted: Bool)?>(nil)

    init(audit: AuditLog) { self.audit = audit }

    /// The verification callback, noting what it was shown and what it decided.
    func watching(_ verify: TLSChannelConfiguration.CustomVerificationCallback?) -> NIOSSLCustomVerificationCallback? {
        guard let verify else { return nil }
        let presented = presented
        return { certificates, promise in
            let pin = certificates.first.flatMap { try? NodeTLSIdentity.pin(of: $0) }
            promise.futureResult.whenSuccess { result in presented.withLockedValue { $0 = (pin, result == .certificateVerified) } }
            verify(certificates, promise)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case NIOSSLError.handshakeFailed(let reason) = error {
            let seen = presented.withLockedValue { $0 }
            audit.refusedTLS(address: context.remoteAddress?.ipAddress ?? "unknown", pin: seen?.pin,
                             reason: seen.map { $0.accepted ? "handshake-failed" : "certificate-not-in-registry" } ?? "no-client-certificate",
                             detail: "\(reason)")
        }
        context.fireErrorCaught(error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Right after the TLS handler: closes the connection unless its handshake completes in time. A
/// client that connects and sends nothing would otherwise hold its file descriptor for ever.
final class HandshakeTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            loopBound.value.close(promise: nil)
        }
    }
}

/// Per-partner caps on requests in progress and on waiting long polls. A partner is its pinned
/// certificate; on the plain-HTTP test listener, its address.
final class PeerLoad: Sendable {
    struct Counts {
        var requests = 0
        var longPolls = 0
    }
    let limits: DaemonConfiguration.PeerLimits
    let counts = Mutex<[String: Counts]>([:])

    init(limits: DaemonConfiguration.PeerLimits) { self.limits = limits }

    /// Takes a request place (and a long-poll place when `longPoll`), or answers why not.
    func acquire(_ peer: String, longPoll: Bool) -> APIError? {
        counts.withLock { all in
            var c = all[peer, default: Counts()]
            if c.requests >= limits.maxRequestsPerPeer {
                return APIError(.tooManyRequests, "too-many-requests", "at most \(limits.maxRequestsPerPeer) requests in progress per partner")
            }
            if longPoll, c.longPolls >= limits.maxLongPollsPerPeer {
                return APIError(.tooManyRequests, "too-many-requests", "at most \(limits.maxLongPollsPerPeer) waiting long polls per partner")
            }
            c.requests += 1
            if longPoll { c.longPolls += 1 }
            all[peer] = c
            return nil
        }
    }

    func release(_ peer: String, longPoll: Bool) {
        counts.withLock { all in
            guard var c = all[peer] else { return }
            c.requests -= 1
            if longPoll { c.longPolls -= 1 }
            all[peer] = c.requests == 0 ? nil : c
        }
    }
}

/// Applies `PeerLoad` to every peer request. A pull that asks to wait counts as a long poll
/// whether or not it ends up waiting: the cap is on what a partner may ask for.
struct PeerLoadMiddleware: RouterMiddleware {
    typealias Context = PeerRequestContext
    let load: PeerLoad

    func handle(_ request: Request, context: PeerRequestContext, next: (Request, PeerRequestContext) async throws -> Response) async throws -> Response {
        let peer = context.caller
        let wait = request.uri.queryParameters["wait"].map(String.init)
        let longPoll = request.uri.path == "/v1/peer/commits" && request.method == .get && wait != nil && wait != "0"
        if let refusal = load.acquire(peer, longPoll: longPoll) { throw refusal }
        defer { load.release(peer, longPoll: longPoll) }
        return try await next(request, context)
    }
}

/// Reads the caller's certificate pin once per request, for the middlewares and routes after it.
struct PartnerCertificateMiddleware: RouterMiddleware {
    typealias Context = PeerRequestContext

    func handle(_ request: Request, context: PeerRequestContext, next: (Request, PeerRequestContext) async throws -> Response) async throws -> Response {
        var context = context
        if let channel = context.channel, let certificate = try? await channel.nioSSL_peerCertificate().get() {
            guard let pin = try? NodeTLSIdentity.pin(of: certificate) else {
                throw APIError(.forbidden, "forbidden", "the client certificate's public key cannot be read")
            }
            context.partnerPin = pin
        }
        return try await next(request, context)
    }
}

/// The TLS handshake checks a partner's certificate against the partnership when a connection
/// opens; a connection opened before a coordinator retired its node lives on, so each request
/// is checked again against the partnership in force. A certificate of no active partner (let
/// through while an invite is open) reaches the join route only.
struct PeerMembershipMiddleware: RouterMiddleware {
    typealias Context = PeerRequestContext
    let replica: Replica

    func handle(_ request: Request, context: PeerRequestContext, next: (Request, PeerRequestContext) async throws -> Response) async throws -> Response {
        var context = context
        if let pin = context.partnerPin {
            let nodes = replica.registry.nodes.values
            context.partnerNode = nodes.first { !$0.isRetired && $0.certificatePin == pin }?.id
            if context.partnerNode == nil, request.uri.path != PeerJoin.path {
                let retired = nodes.contains { $0.isRetired && $0.certificatePin == pin }
                throw APIError(.forbidden, "forbidden", retired
                    ? "the certificate \(pin) is no active partner's: its node was retired by a coordinator"
                    : "the certificate \(pin) is no partner's; a new node joins with an invite (progsyncd init --invite)")
            }
        }
        return try await next(request, context)
    }
}

/// Closes the connection after a large answer. NIOSSL keeps each connection's outbound buffer
/// at the largest write it ever made (2.37.6 ignores its own cap): a partner's first pull of the
/// whole replica left ~130 KB on each of a hub's idle connections, 12.9 MB with 49 partners
/// (heaptrack). A new connection, a handshake per large answer, costs a millisecond of a batch
/// that large.
struct LargeAnswerClosesConnection: RouterMiddleware {
    typealias Context = PeerRequestContext
    static let largeAnswer = 32 * 1024

    func handle(_ request: Request, context: PeerRequestContext, next: (Request, PeerRequestContext) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        if let length = response.body.contentLength, length > Self.largeAnswer {
            response.headers[.connection] = "close"
        }
        return response
    }
}
