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
        var out: [UInt8] = []
        out.reserveCapacity(16)
        appendHex(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    public func appendHex(to out: inout [UInt8]) {
        for shift in stride(from: 60, through: 0, by: -4) {
            out.append(JSONValue.hexDigits[Int((rawValue >> UInt64(shift)) & 0xF)])
        }
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
        var out: [UInt8] = []
        out.reserveCapacity(24)
        appendISO8601(milliseconds: ms, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, written as bytes (answers carry one per field version).
    public static func appendISO8601(milliseconds ms: UInt64, to out: inout [UInt8]) {
        // Civil-from-days (H. Hinnant), so the core needs no Foundation date formatting.
        let seconds = Int64(ms / 1000)
        let millis = Int(ms % 1000)
        let days = seconds / 86400
        let secOfDay = Int(seconds - days * 86400)
        let z = days + 719_468
        let era = z / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func digits(_ v: Int, _ width: Int, then separator: UInt8?) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor <= v / 10 { divisor *= 10 }
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(v / divisor % 10))
                divisor /= 10
            }
            if let separator { out.append(separator) }
        }
        digits(Int(year), 4, then: UInt8(ascii: "-"))
        digits(Int(month), 2, then: UInt8(ascii: "-"))
        digits(Int(day), 2, then: UInt8(ascii: "T"))
        digits(secOfDay / 3600, 2, then: UInt8(ascii: ":"))
        digits(secOfDay / 60 % 60, 2, then: UInt8(ascii: ":"))
        digits(secOfDay % 60, 2, then: UInt8(ascii: "."))
        digits(millis, 3, then: UInt8(ascii: "Z"))
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
