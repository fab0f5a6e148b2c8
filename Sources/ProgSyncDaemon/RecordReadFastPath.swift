import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import ProgSyncCore
import Synchronization

/// Answers `GET /v1/records/{id}` for an existing record on the connection's event loop, before
/// the request reaches Hummingbird's async responder. A record read takes ~10 µs of SQLite and
/// JSON; the hops from the event loop to a task and back, the router and the per-request logger
/// cost more than that, and this is the local API's hottest route.
///
/// The router stays the one place for everything else: other routes, a query string, a body,
/// a `Connection` header, an id that needs decoding, a missing record and every error are passed
/// on unchanged, so their answers (and error shapes) come from the same code as before.
/// Answers stay in request order: the fast path is taken only while the router owes this
/// connection no answer. It is also taken only while the connection is writable: a client that
/// pipelines requests and does not read its answers is left to the router, whose writes wait for
/// the socket and whose reads stop when its answers back up, so the daemon stops reading from
/// that client instead of queueing answers for it without bound.
final class RecordReadFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    static let prefix = Array("/v1/records/".utf8)

    /// The record's JSON answer, or nil when it does not exist or cannot be read here.
    private let answer: @Sendable (String) -> [UInt8]?
    /// A candidate GET, held until its end shows it has no body.
    private var held: (request: HTTPRequest, id: String)?
    /// Requests passed to the router that it has not finished answering.
    private var owed = 0
    private var needsFlush = false

    init(answer: @escaping @Sendable (String) -> [UInt8]?) {
        self.answer = answer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            if owed == 0, context.channel.isWritable, let id = Self.recordID(request) {
                held = (request, id)
                return
            }
            owed += 1
            context.fireChannelRead(data)
        case .body:
            passHeld(context: context)
            context.fireChannelRead(data)
        case .end:
            if let (_, id) = held, let body = answer(id) {
                held = nil
                respond(context: context, body: body)
                return
            }
            passHeld(context: context)
            context.fireChannelRead(data)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { owed = max(0, owed - 1) }
        context.write(data, promise: promise)
    }

    private func passHeld(context: ChannelHandlerContext) {
        guard let (request, _) = held else { return }
        held = nil
        owed += 1
        context.fireChannelRead(wrapInboundOut(.head(request)))
    }

    private func respond(context: ChannelHandlerContext, body: [UInt8]) {
        // The same framing as `JSONResponse`: a newline ends the JSON.
        var buffer = context.channel.allocator.buffer(capacity: body.count + 1)
        buffer.writeBytes(body)
        buffer.writeInteger(UInt8(0x0A))
        let head = HTTPResponse(status: .ok, headerFields: [
            .contentType: JSONResponse.contentType,
            .contentLength: String(buffer.readableBytes),
            .date: HTTPDate.now(),
        ])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(buffer)), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        needsFlush = true
    }

    /// The id of a plain `GET /v1/records/{id}`; nil for anything the router should see.
    static func recordID(_ request: HTTPRequest) -> String? {
        guard request.method == .get, let path = request.path, request.headerFields[.connection] == nil else { return nil }
        let bytes = path.utf8
        guard bytes.count > prefix.count, bytes.starts(with: prefix) else { return nil }
        let id = String(Substring(path.utf8.dropFirst(prefix.count)))
        // Anything with '/', '?', '%' or other bytes is not a valid id and goes to the router.
        return ProgrammeSchema.isValidRecordID(id) ? id : nil
    }
}

/// The `Date` header (RFC 9110 IMF-fixdate), formatted once per second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((0, ""))

    static func now() -> String {
        var t = time(nil)
        if let hit = cache.withLock({ $0.second == t ? $0.text : nil }) { return hit }
        var parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 40)
        let n = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        let text = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        cache.withLock { $0 = (t, text) }
        return text
    }
}
