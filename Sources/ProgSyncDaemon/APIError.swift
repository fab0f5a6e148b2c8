import Foundation
import Logging
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import ProgSyncCore
import ProgSyncStore

/// An error answered as `{"error": code, "message": text}` with its status.
struct APIError: Error, HTTPResponseError {
    var status: HTTPResponse.Status
    var code: String
    var message: String

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    static func badRequest(_ message: String) -> APIError { APIError(.badRequest, "bad-request", message) }
    static func notFound(_ message: String) -> APIError { APIError(.notFound, "not-found", message) }
    static func invalid(_ message: String) -> APIError { APIError(.unprocessableContent, "invalid", message) }

    init(_ error: ReplicaError) {
        switch error.code {
        case .invalid: self.init(.unprocessableContent, "invalid", error.message)
        case .forbidden: self.init(.forbidden, "forbidden", error.message)
        case .notFound: self.init(.notFound, "not-found", error.message)
        case .exists: self.init(.conflict, "exists", error.message)
        case .catchingUp: self.init(.serviceUnavailable, "catching-up", error.message)
        default: self.init(.internalServerError, "internal", error.message)
        }
    }

    /// A write that failed for the disk, not for what it asked: nothing of it was stored, and
    /// the same request succeeds once the disk is fixed (no restart needed).
    init(_ failure: StorageFailure) {
        switch failure.kind {
        case .full:
            self.init(.init(code: 507, reasonPhrase: "Insufficient Storage"), "disk-full", "the disk holding the replica is full: nothing was written; free space and try again")
        case .io:
            self.init(.serviceUnavailable, "io-error", "the replica's disk failed (\(failure.description)): nothing was written; check the disk and try again")
        }
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        (context as? LocalRequestContext)?.refusal.withLockedValue { $0 = self }
        return JSONResponse.make(status: status, .object(["error": .string(code), "message": .string(message)]))
    }
}

enum JSONResponse {
    static let contentType = "application/json; charset=utf-8"

    static func make(status: HTTPResponse.Status = .ok, _ value: JSONValue) -> Response {
        make(status: status, bytes: value.canonicalBytes)
    }

    /// An answer already encoded as canonical JSON; a newline ends it.
    static func make(status: HTTPResponse.Status = .ok, bytes: [UInt8]) -> Response {
        var bytes = bytes
        bytes.append(0x0A)
        return Response(
            status: status, headers: [.contentType: contentType],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

/// Turns every failure, including the router's own 404s and Hummingbird's HTTP errors, into the
/// JSON error shape, so clients never see an empty error body.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as ReplicaError {
            return try APIError(error).response(from: request, context: context)
        } catch let error where StorageFailure(error) != nil {
            let failure = StorageFailure(error)!
            context.logger.error("write failed on the replica's disk", metadata: ["error": "\(failure)"])
            return try APIError(failure).response(from: request, context: context)
        } catch let error as HTTPError {
            let code: String
            switch error.status {
            case .notFound: code = "not-found"
            case .methodNotAllowed: code = "method-not-allowed"
            case .contentTooLarge: code = "too-large"
            default: code = error.status.code < 500 ? "bad-request" : "internal"
            }
            let message = error.body ?? (error.status == .notFound ? "no such route: \(request.method) \(request.uri.path)" : error.status.reasonPhrase)
            return try APIError(error.status, code, message).response(from: request, context: context)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(type(of: error))"])
            return try APIError(.internalServerError, "internal", "internal error").response(from: request, context: context)
        }
    }
}
