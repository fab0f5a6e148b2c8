import HTTPTypes
import Hummingbird
import ProgSyncCore

/// Answers a known path asked with a method it does not serve (`TRACE /v1/status`) with 405, an
/// `Allow` header and the JSON error shape, as HTTP (RFC 9110 §15.5.6) and the OpenAPI document
/// say; the router alone can only say 404. Add it after every route: it sees the router's routes
/// as they are then, and it only ever runs where no route matched.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: [(path: RouterPath, method: HTTPRequest.Method)]

    init(routes: [Router<Context>.RouteDescription]) {
        self.routes = routes.map { ($0.path, $0.method) }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let allowed = allowedMethods(path: request.uri.path)
            guard !allowed.isEmpty else { throw error }
            var response = JSONResponse.make(status: .methodNotAllowed, .object([
                "error": "method-not-allowed",
                "message": .string("\(request.method) is not served on \(request.uri.path); use \(allowed.joined(separator: ", "))"),
            ]))
            response.headers[.allow] = allowed.joined(separator: ", ")
            return response
        }
    }

    /// The methods of the routes whose template matches `path`, sorted.
    func allowedMethods(path: String) -> [String] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        let methods = routes.filter { route in
            route.path.count == segments.count && zip(route.path, segments).allSatisfy { $0 ~= $1 }
        }.map(\.method.rawValue)
        return Set(methods).sorted()
    }
}
