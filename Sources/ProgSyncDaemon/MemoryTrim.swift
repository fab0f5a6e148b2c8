import CMalloc
import ServiceLifecycle

/// Gives freed heap back to the system now and then. glibc returns memory only from the top of
/// an arena; what a burst frees below live chunks (a hub serving 49 partners' first pulls, their
/// TLS connections closing) stays resident until `malloc_trim` releases the free pages inside it.
struct MemoryTrim: Service {
    var interval: Duration = .seconds(30)

    func run() async throws {
        while (try? await cancelWhenGracefulShutdown({ try await Task.sleep(for: interval) })) != nil {
            malloc_trim(0)
        }
    }
}
