import ProgSyncCore
import Testing

@testable import ProgSyncDaemon

/// The arithmetic on what a partner says and on the wall clock, without a network (issue 11, item 1).
@Suite struct PeerAnswerTests {
    @Test func pullAnswersMustMoveTheCursorForward() throws {
        func page(_ cursor: JSONValue, more: Bool = false, lastLSN: JSONValue = 10, since: Int64 = 4, commits: Int = 0) throws
            -> (cursor: Int64, more: Bool, lastLSN: Int64)
        {
            try PeerReplicator.pullPage(["cursor": cursor, "more": .bool(more), "lastLSN": lastLSN], since: since, commits: commits)
        }
        // Honest answers: a page that moves on, an empty long poll, a partner whose log restarted below our cursor.
        #expect(try page(9, more: true, commits: 5) == (9, true, 10))
        #expect(try page(4) == (4, false, 10))
        #expect(try page(4, lastLSN: 2) == (4, false, 2))
        #expect(try page(.int(.max), lastLSN: .int(.max)) == (.max, false, .max))
        #expect(try PeerReplicator.pullPage(["cursor": 6, "commits": []], since: 4, commits: 0) == (6, false, 6))
        // Refused: no cursor, a cursor below ours or below zero, a negative lastLSN, "more" without progress.
        for bad: JSONValue in [["more": false], ["cursor": 3], ["cursor": -1], ["cursor": .int(.min)], ["cursor": 5, "lastLSN": .int(.min)],
                               ["cursor": 4, "more": true], ["cursor": "9"]] {
            #expect(throws: PeerError.self, "\(bad)") { try PeerReplicator.pullPage(bad, since: 4, commits: 0) }
        }
        #expect(throws: PeerError.self) { try page(4, more: true, commits: 3) }
    }

    @Test func lagNeverOverflowsOrGoesNegative() {
        var status = PeerStatus(name: "p", node: NodeIdentity().id, org: "om", address: "https://127.0.0.1:1")
        status.remoteLastLSN = .max
        status.pulled = 0
        // The wall clock stepped back ten seconds since the last contact.
        status.lastContact = 1_800_000_010_000
        let json = status.json(now: 1_800_000_000_000, localLastLSN: 0)
        #expect(json["lagCommits"] == .int(.max) && json["lagSeconds"] == .double(0), "\(json)")
        status.lastContact = 1_800_000_000_000
        #expect(status.json(now: 1_800_000_002_500, localLastLSN: 0)["lagSeconds"] == .double(2.5))
    }
}
