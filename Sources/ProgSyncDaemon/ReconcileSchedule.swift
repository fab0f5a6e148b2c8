import Foundation
import ProgSyncCore

/// The nightly reconciliation's time: daily at HH:MM in the node's time zone (`TZ` or
/// /etc/localtime), or off.
public struct ReconcileSchedule: Sendable, Equatable, CustomStringConvertible {
    public var hour: Int?
    public var minute: Int

    public init?(_ text: String) {
        if text == "off" {
            hour = nil
            minute = 0
            return
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count <= 2, parts[1].count == 2,
            let h = Int(parts[0]), let m = Int(parts[1]), (0..<24).contains(h), (0..<60).contains(m)
        else { return nil }
        hour = h
        minute = m
    }

    public var isOff: Bool { hour == nil }
    public var description: String { hour.map { String(format: "%02d:%02d", $0, minute) } ?? "off" }

    var calendar: Calendar {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone.current
        return c
    }

    /// The first run strictly after `date`.
    public func next(after date: Date) -> Date? {
        guard let hour else { return nil }
        return calendar.nextDate(after: date, matching: DateComponents(hour: hour, minute: minute, second: 0), matchingPolicy: .nextTime)
    }

    /// The last run due at or before `date`.
    public func previous(atOrBefore date: Date) -> Date? {
        guard let hour else { return nil }
        return calendar.nextDate(after: date.addingTimeInterval(1), matching: DateComponents(hour: hour, minute: minute, second: 0),
                                 matchingPolicy: .nextTime, direction: .backward)
    }

    /// A run was missed when one fell due after the last run started (a node that never ran
    /// has nothing to catch up on: its first run is the next one).
    public func missedRun(lastRun: Date?, now: Date) -> Date? {
        guard let lastRun, let due = previous(atOrBefore: now), due > lastRun else { return nil }
        return due
    }
}
