extension CommitRef {
    /// `origin/seq`, as `description` writes it; nil for anything else.
    public init?(text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let origin = NodeID(String(parts[0])),
            parts[1].utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let seq = UInt64(parts[1]), seq >= 1, seq < UInt64(1) << 63
        else { return nil }
        self.init(origin: origin, seq: seq)
    }
}
