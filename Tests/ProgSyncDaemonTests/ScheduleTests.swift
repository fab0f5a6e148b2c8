import Foundation
import ProgSyncDaemon
import Testing

@Suite struct ReconcileScheduleTests {
    let calendar: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone.current
        return c
    }()

    func at(_ day: Int, _ hour: Int, _ minute: Int) -> Date {
        calendar.date(from: DateComponents(year: 2026, month: 11, day: day, hour: hour, minute: minute))!
    }

    @Test func parsesTimesAndOff() {
        #expect(ReconcileSchedule("02:30")?.description == "02:30")
        #expect(ReconcileSchedule("2:30")?.description == "02:30")
        #expect(ReconcileSchedule("off")?.isOff == true)
        for bad in ["24:00", "02:60", "0230", "02:3", "", "nightly", "-1:30"] {
            #expect(ReconcileSchedule(bad) == nil, "\(bad)")
        }
    }

    @Test func nextAndPreviousRunInLocalTime() throws {
        let s = try #require(ReconcileSchedule("02:30"))
        #expect(s.next(after: at(20, 1, 0)) == at(20, 2, 30))
        #expect(s.next(after: at(20, 2, 30)) == at(21, 2, 30))
        #expect(s.next(after: at(20, 23, 0)) == at(21, 2, 30))
        #expect(s.previous(atOrBefore: at(20, 2, 30)) == at(20, 2, 30))
        #expect(s.previous(atOrBefore: at(20, 1, 0)) == at(19, 2, 30))
        #expect(ReconcileSchedule("off")!.next(after: at(20, 1, 0)) == nil)
    }

    @Test func aMissedRunIsCaughtUpOnce() throws {
        let s = try #require(ReconcileSchedule("02:30"))
        // Last run the night before yesterday; the daemon was down last night: catch up.
        #expect(s.missedRun(lastRun: at(18, 2, 30), now: at(20, 9, 0)) == at(20, 2, 30))
        // Ran last night: nothing missed.
        #expect(s.missedRun(lastRun: at(20, 2, 30).addingTimeInterval(1), now: at(20, 9, 0)) == nil)
        // Before tonight's time, yesterday's run counts.
        #expect(s.missedRun(lastRun: at(19, 2, 31), now: at(20, 1, 0)) == nil)
        // A node that never ran has nothing to catch up on.
        #expect(s.missedRun(lastRun: nil, now: at(20, 9, 0)) == nil)
    }
}
