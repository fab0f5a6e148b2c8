import Foundation
import ProgSyncCore
import ProgSyncHTTPClient
import Testing

/// Metrics between real nodes over TLS: what a partner sent is counted once per commit under its
/// org, and the partner shows up, recently contacted, with a clock offset near zero.
@Suite(.serialized)
struct PeerMetricsTests {
    static func scrape(_ net: PeerNetwork, _ name: String) async throws -> String {
        let response = try await net.nodes[name]!.client.send(HTTPClientRequest(url: "http://localhost/metrics", timeout: .seconds(5)))
        #expect(response.status == 200)
        return String(decoding: response.body, as: UTF8.self)
    }

    /// The value of the one series whose line starts with `prefix`.
    static func value(_ text: String, _ prefix: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(prefix + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    @Test func partnersCommitsAndStateAreInTheMetrics() async throws {
        let net = try PeerNetwork([("jenv", "jenv"), ("politie", "politie")])
        defer { net.tearDown() }
        // politie dials, jenv stands by (one dialler per pair): politie's metrics show its partner
        // jenv as it replicates, and jenv's listener counts politie's requests.
        net.nodes["politie"]!.environment["PROGSYNC_PEERS_CONNECT"] = "jenv"
        try net.start("jenv", sample: true)
        try net.start("politie")
        _ = try await net.waitForAgreement()
        let jenvID = net.nodes["jenv"]!.id
        // Asked without blocking a thread: PeerNetwork.status waits on a semaphore.
        let held = try await net.request("politie", "GET", "/v1/status").1["versionVector"]?[jenvID]?.intValue ?? 0
        #expect(held > 0)
        // politie's first pull from jenv's listener is counted when it is answered; wait for it.
        let counted = try await eventually(10) {
            try await Self.scrape(net, "jenv").contains(#"route="/v1/peer/commits""#)
        }
        #expect(counted, "the peer listener's requests are counted by route template")
        let text = try await Self.scrape(net, "politie")
        // Every commit of jenv's that politie holds was merged exactly once, by pull or by push.
        #expect(Self.value(text, #"progsync_commits_applied_total{origin_org="jenv"}"#) == Double(held), "\(text.prefix(2000))")
        #expect(Self.value(text, "progsync_merge_duration_seconds_count") ?? 0 > 0)
        #expect(Self.value(text, #"progsync_peer_state{peer="jenv",peer_org="jenv",state="up"}"#) == 1)
        let contact = try #require(Self.value(text, #"progsync_peer_last_contact_timestamp_seconds{peer="jenv",peer_org="jenv"}"#))
        #expect(abs(contact - Date().timeIntervalSince1970) < 60)
        let offset = try #require(Self.value(text, #"progsync_peer_clock_offset_seconds{peer="jenv",peer_org="jenv"}"#), "\(text)")
        #expect(abs(offset) < 5, "same machine, same clock: \(offset)")
        #expect(Self.value(text, #"progsync_peer_lag_commits{peer="jenv",peer_org="jenv"}"#) == 0)
    }
}
