/// Exponential backoff with full jitter, pure: the caller supplies the random draw and sleeps.
public struct Backoff: Sendable, Equatable {
    public var base: Duration
    public var cap: Duration
    public private(set) var failures = 0

    public init(base: Duration = .milliseconds(200), cap: Duration = .seconds(30)) {
        self.base = base
        self.cap = cap
    }

    /// Records a failure and returns how long to wait: uniform in [0, min(cap, base·2^failures)],
    /// never below a tenth of base so a dead peer is not hammered.
    public mutating func fail(random unit: Double) -> Duration {
        failures += 1
        let ceiling = min(cap, base * (1 << min(failures - 1, 20)))
        let jittered = ceiling * max(0, min(1, unit))
        return max(jittered, base / 10)
    }

    public mutating func succeed() { failures = 0 }
}
