/// A moment in the programme's history as a person names it (`--as-of`, `?asOf=`), turned into
/// the last stamp that counts: the programme as of then is made by exactly the commits stamped
/// at or before `cut`.
///
/// - `2022-12-31`: the end of that day in the Netherlands (Europe/Amsterdam: CET, CEST under the
///   EU summer-time rule in force since 1996). Annual reports and ministers' letters mean the
///   Dutch calendar day; the rule is written out here, not read from the host's time zone
///   database, so every node of every version draws the same line.
/// - `2022-12-31T23:00:00Z`, `2023-01-01T00:00:00.000+01:00`: an RFC 3339 instant; every commit
///   stamped in that millisecond or before counts.
public struct AsOf: Sendable, Hashable, CustomStringConvertible {
    /// The greatest stamp that counts.
    public var cut: Stamp
    /// What the user wrote, for messages and report headings.
    public var text: String

    /// The greatest stamp a replica stores (stamps are SQLite integers; year 6429 and beyond
    /// is no clock's reading): later cuts are this one.
    public static let latest = Stamp(rawValue: UInt64(Int64.max))

    public init(cut: Stamp, text: String) {
        self.cut = min(cut, Self.latest)
        self.text = text
    }

    public var description: String { text }

    /// The instant itself, in UTC, e.g. `2022-12-31T22:59:59.999Z`.
    public var instant: String { Stamp.iso8601(milliseconds: cut.milliseconds) }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public init(parsing raw: String) throws(ParseError) {
        guard let moment = WrittenMoment(raw) else {
            throw ParseError(description: "expected a date (2022-12-31: the end of that day in Amsterdam) or an RFC 3339 instant "
                + "(2022-12-31T23:00:00Z, 2023-01-01T00:00:00+01:00), not \"\(raw.prefix(40))\"")
        }
        switch moment {
        case .date(let days):
            // The end of the day in Amsterdam: the next local midnight, less one stamp.
            let nextMidnightUTC = Int64(days + 1) * 86_400_000
            let cet = nextMidnightUTC - 3_600_000
            let midnight = cet > 0 && Self.isEUSummerTime(utcMilliseconds: cet) ? nextMidnightUTC - 7_200_000 : cet
            self.init(cut: midnight > 0 ? Stamp(rawValue: Stamp(milliseconds: UInt64(midnight), counter: 0).rawValue - 1) : .zero, text: raw)
        case .instant(let ms):
            // Before 1970 nothing counts: every commit is stamped later.
            self.init(cut: ms >= 0 ? Stamp(milliseconds: UInt64(ms), counter: .max) : .zero, text: raw)
        }
    }

    /// EU summer time: from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last
    /// Sunday of October.
    static func isEUSummerTime(utcMilliseconds ms: Int64) -> Bool {
        let year = Int(Stamp.iso8601(milliseconds: UInt64(ms)).prefix(4)) ?? 1970
        func lastSunday(month: Int) -> Int {
            let last = WrittenMoment.days(year: year, month: month, day: 31)
            let weekday = (last + 4) % 7  // 1970-01-01 was a Thursday; 0 = Sunday
            return last - weekday
        }
        let start = Int64(lastSunday(month: 3)) * 86_400_000 + 3_600_000
        let end = Int64(lastSunday(month: 10)) * 86_400_000 + 3_600_000
        return ms >= start && ms < end
    }
}

/// A moment as a person or a query writes it: a calendar date (`2022-12-31`) or an RFC 3339
/// instant (`2022-12-31T23:00:00Z`, `2023-01-01T00:00:00.5+01:00`), any year 0001–9999. The
/// one parser for `--as-of`, `?asOf=` and `since`; each says what a date means to it.
public enum WrittenMoment: Sendable, Equatable {
    /// Days since 1970-01-01 (negative before).
    case date(days: Int)
    /// Milliseconds since 1970 in UTC (negative before); digits finer than a millisecond are cut off.
    case instant(milliseconds: Int64)

    public init?(_ raw: String) {
        let bytes = Array(raw.utf8)
        var i = 0
        func number(_ width: Int) -> Int? {
            guard i + width <= bytes.count else { return nil }
            var n = 0
            for b in bytes[i..<(i + width)] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) else { return nil }
                n = n * 10 + Int(b - UInt8(ascii: "0"))
            }
            i += width
            return n
        }
        func expect(_ chars: String) -> Bool {
            guard i < bytes.count, chars.utf8.contains(bytes[i]) else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
              year >= 1, (1...12).contains(month), (1...Self.daysIn(month: month, year: year)).contains(day)
        else { return nil }
        let days = Self.days(year: year, month: month, day: day)
        if i == bytes.count {
            self = .date(days: days)
            return
        }
        guard expect("Tt "), let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2),
              hour < 24, minute < 60, second < 60
        else { return nil }
        var millis = 0
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) {
                if digits < 3 { millis = millis * 10 + Int(bytes[i] - UInt8(ascii: "0")) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            if digits < 3 { for _ in digits..<3 { millis *= 10 } }
        }
        var offsetMinutes = 0
        if expect("Zz") {
            offsetMinutes = 0
        } else if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") {
            let sign = bytes[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            guard let h = number(2), expect(":"), let m = number(2), h < 24, m < 60 else { return nil }
            offsetMinutes = sign * (h * 60 + m)
        } else {
            return nil
        }
        guard i == bytes.count else { return nil }
        self = .instant(milliseconds: ((Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second)) - Int64(offsetMinutes) * 60) * 1000
            + Int64(millis))
    }

    /// Days since 1970-01-01 (days-from-civil, H. Hinnant).
    static func days(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}
