#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

private final class ThreadStart {
    let body: @Sendable () -> Void

    init(body: @escaping @Sendable () -> Void) {
        self.body = body
    }
}

/// Starts a detached OS thread (not part of Swift's cooperative pool).
func spawnThread(_ body: @escaping @Sendable () -> Void) throws(HTTPClientError) {
    let start = Unmanaged.passRetained(ThreadStart(body: body)).toOpaque()

    #if canImport(Darwin)
    var thread: pthread_t? = nil
    let result = pthread_create(&thread, nil, { raw in
        Unmanaged<ThreadStart>.fromOpaque(raw).takeRetainedValue().body()
        return nil
    }, start)
    #else
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { raw in
        Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, start)
    #endif

    guard result == 0 else {
        Unmanaged<ThreadStart>.fromOpaque(start).release()
        throw HTTPClientError(code: .transport, message: "could not start the HTTP client thread (error \(result))")
    }
    #if canImport(Darwin)
    pthread_detach(thread!)
    #else
    pthread_detach(thread)
    #endif
}
