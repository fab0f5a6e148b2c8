/// A hybrid logical clock time: 48 bits of milliseconds since the epoch and a 16-bit counter,
/// compared as one 64-bit integer (Kulkarni et al. 2014). Ties are broken by origin elsewhere.
public struct Stamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public init(milliseconds: UInt64, counter: UInt16) {
        rawValue = (milliseconds & 0xFFFF_FFFF_FFFF) << 16 | UInt64(counter)
    }

    public static let zero = Stamp(rawValue: 0)

    public var milliseconds: UInt64 { rawValue >> 16 }
    public var counter: UInt16 { UInt16(truncatingIfNeeded: rawValue) }

    public static func < (a: Stamp, b: Stamp) -> Bool { a.rawValue < b.rawValue }

    /// 16 hex digits: exact, sortable, and safe for JSON clients whose numbers are doubles.
    public var hex: String {
        let digits = String(rawValue, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    public init?(hex: String) {
        guard hex.utf8.count == 16, let value = UInt64(hex, radix: 16) else { return nil }
        rawValue = value
    }

    /// ISO 8601 UTC time of the physical part, with the counter after a slash when non-zero.
    public var description: String {
        let iso = Self.iso8601(milliseconds: milliseconds)
        return counter == 0 ? iso : "\(iso)/\(counter)"
    }

    public static func iso8601(milliseconds ms: UInt64) -> String {
        // Civil-from-days (H. Hinnant), so the core needs no Foundation date formatting.
        let seconds = Int64(ms / 1000)
        let millis = Int(ms % 1000)
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secOfDay = Int(seconds - days * 86400)
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ v: Int, _ n: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, n - s.count)) + s
        }
        return "\(pad(Int(year), 4))-\(pad(Int(month), 2))-\(pad(Int(day), 2))T\(pad(secOfDay / 3600, 2)):"
            + "\(pad(secOfDay / 60 % 60, 2)):\(pad(secOfDay % 60, 2)).\(pad(millis, 3))Z"
    }
}

/// The clock's state machine. Pure: the caller supplies physical time and persists `last`.
public struct HybridLogicalClock: Sendable, Equatable {
    public private(set) var last: Stamp

    public init(last: Stamp = .zero) { self.last = last }

    /// A local or send event: `l = max(l, now)`, counter bumped when physical time did not move.
    public mutating func tick(nowMilliseconds now: UInt64) -> Stamp {
        if now > last.milliseconds {
            last = Stamp(milliseconds: now, counter: 0)
        } else {
            last = Self.bump(last)
        }
        return last
    }

    /// A receive event: `l = max(l, remote, now)` with the paper's counter rule.
    public mutating func receive(_ remote: Stamp, nowMilliseconds now: UInt64) {
        let l = last.milliseconds
        let newMs = max(l, remote.milliseconds, now)
        if newMs == l && newMs == remote.milliseconds {
            last = Stamp(milliseconds: newMs, counter: max(last.counter, remote.counter))
            last = Self.bump(last)
        } else if newMs == l {
            last = Self.bump(last)
        } else if newMs == remote.milliseconds {
            last = Self.bump(Stamp(milliseconds: newMs, counter: remote.counter))
        } else {
            last = Stamp(milliseconds: newMs, counter: 0)
        }
    }

    /// Counter overflow spills into the millisecond part, keeping stamps strictly increasing.
    static func bump(_ s: Stamp) -> Stamp { Stamp(rawValue: s.rawValue &+ 1) }

    /// Whether a remote stamp is further ahead of local physical time than allowed.
    public static func isTooFarAhead(_ remote: Stamp, nowMilliseconds now: UInt64, maxOffsetMilliseconds: UInt64) -> Bool {
        remote.milliseconds > now &+ maxOffsetMilliseconds
    }
}
