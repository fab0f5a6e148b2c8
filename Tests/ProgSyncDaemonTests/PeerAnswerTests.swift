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

    /// One dialler per pair (#12): whatever the counts and ids, exactly one side of a pair keeps
    /// dialling, and a node without `peers.connect` (a hub) leaves it to a spoke.
    @Test func exactlyOneSideOfAPairDials() throws {
        let ids = (0..<40).map { i in NodeID(String(repeating: Array("abcdefghijklmnopqrstuvwxyz234567")[i % 32], count: 16))! }
        let counts = [0, 1, 2, 3, 49, Int.max]
        for a in ids.prefix(8) { for b in ids.suffix(8) where a != b { for ca in counts { for cb in counts {
            let aDials = PairDialling.partnerDials(partner: (ca, a), me: (cb, b))
            let bDials = PairDialling.partnerDials(partner: (cb, b), me: (ca, a))
            #expect(aDials != bDials, "\(ca) \(a) / \(cb) \(b)")
        } } } }
        let hub = PairDialling(me: ids[0], peersConnect: nil)
        let spoke = PairDialling(me: ids[39], peersConnect: ["jenv"])
        #expect(hub.dialsParameter == "all" && spoke.dialsParameter == "1")
        // The spoke's long poll is in flight: the hub stands by, though its id is the smaller.
        hub.pollBegan(from: ids[39], dials: PairDialling.dials(parameter: spoke.dialsParameter)!, since: 7, pushed: 0, now: 1000)
        #expect(hub.standsBy(for: ids[39], now: 60_000)?.since == 7)
        spoke.pollBegan(from: ids[0], dials: PairDialling.dials(parameter: hub.dialsParameter)!, since: 3, pushed: 0, now: 1000)
        #expect(spoke.standsBy(for: ids[0], now: 1000) == nil)
        // The poll ended and no other followed: the hub dials again once the grace is over.
        hub.pollEnded(from: ids[39], now: 60_000)
        #expect(hub.standsBy(for: ids[39], now: 60_000 + PairDialling.graceMilliseconds - 1) != nil)
        #expect(hub.standsBy(for: ids[39], now: 60_000 + PairDialling.graceMilliseconds) == nil)
        #expect(PairDialling.dials(parameter: "-1") == nil && PairDialling.dials(parameter: "many") == nil)
    }
}
