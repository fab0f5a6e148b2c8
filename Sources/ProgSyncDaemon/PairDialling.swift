import ProgSyncCore
import ProgSyncStore
import Synchronization

/// One dialler per pair of partners (#12). A partner that dials us carries both directions on
/// its own connections: its long poll brings it our commits, its push brings us its own. When
/// both sides of a pair dial, one stands by and closes its connections, which halves a hub's
/// connections (a spoke dials the hub anyway) and a mesh's.
///
/// The rule both sides reach without configuration of its own: the side that names fewer
/// partners in `peers.connect` keeps dialling (a node without the key dials every partner: a hub
/// stands by for its spokes), ties go to the smaller node id. The counts come from configuration,
/// not from the membership, so a partnership that grows never has both sides of a pair decide on
/// different counts. A caller says its count in its long polls (`GET
/// /v1/peer/commits?wait=…&dials=N|all`, with `pushed=`, how far its own feed has been pushed
/// here, so that the side standing by keeps both cursors current and, should it dial again,
/// fetches nothing twice); a node stands by only while such a poll from the partner
/// is in flight or ended moments ago, so a partner that goes quiet is dialled again within one
/// long poll (its wait, 20 s, and 5 s more). Callers of older releases do not say, and are always
/// dialled too.
final class PairDialling: Sendable {
    /// A partner's long polls, as this node's peer listener sees them.
    struct DialIn: Sendable {
        /// How many partners it dials.
        var dials: Int
        /// The cursor of its latest poll: our commits up to there have reached it.
        var since: Int64
        /// Its own feed up to there has been pushed here (it says so in its polls).
        var pushed: Int64
        /// Polls in flight. One whose caller vanished (retired, stopped, cut off) still counts until
        /// its wait is over: the listener reads nothing more from that connection meanwhile.
        var inFlight = 0
        var lastEnded: UInt64

        func isLive(now: UInt64) -> Bool { inFlight > 0 || now < lastEnded + PairDialling.graceMilliseconds }
    }

    /// How long after a poll ends the partner still counts as dialling (it sends the next one at once).
    static let graceMilliseconds: UInt64 = 5000

    let me: NodeID
    /// How many partners `peers.connect` names; `Int.max` without it (every partner).
    let dials: Int
    private let dialIns = Mutex<[NodeID: DialIn]>([:])

    init(me: NodeID, peersConnect: [String]?) {
        self.me = me
        dials = peersConnect?.count ?? Int.max
    }

    /// `dials` as a long poll says it.
    var dialsParameter: String { dials == Int.max ? "all" : "\(dials)" }

    static let maxDials = 100_000
    /// A long poll's `dials`, or nil when it is not one.
    static func dials(parameter: String) -> Int? {
        if parameter == "all" { return Int.max }
        return Int(parameter).flatMap { (0...maxDials).contains($0) ? $0 : nil }
    }

    func pollBegan(from partner: NodeID, dials: Int, since: Int64, pushed: Int64, now: UInt64) {
        dialIns.withLock { all in
            var d = all[partner] ?? DialIn(dials: dials, since: since, pushed: pushed, lastEnded: now)
            d.dials = dials
            d.since = max(d.since, since)
            d.pushed = max(d.pushed, pushed)
            d.inFlight += 1
            all[partner] = d
        }
    }

    func pollEnded(from partner: NodeID, now: UInt64) {
        dialIns.withLock { all in
            guard var d = all[partner] else { return }
            d.inFlight = max(0, d.inFlight - 1)
            d.lastEnded = now
            all[partner] = d
        }
    }

    /// The partner's dial-in when this node should leave the pair's dialling to it; else nil.
    func standsBy(for partner: NodeID, now: UInt64) -> DialIn? {
        guard let d = dialIns.withLock({ $0[partner] }), d.isLive(now: now) else { return nil }
        return Self.partnerDials(partner: (d.dials, partner), me: (dials, me)) ? d : nil
    }

    /// Whether `partner` is the one of the pair that dials: it dials fewer nodes, or as many with a smaller id.
    static func partnerDials(partner: (dials: Int, id: NodeID), me: (dials: Int, id: NodeID)) -> Bool {
        partner.dials != me.dials ? partner.dials < me.dials : partner.id < me.id
    }
}
