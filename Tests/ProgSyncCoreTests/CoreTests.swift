@testable import ProgSyncCore
import Testing

@Suite struct JSONTests {
    @Test func canonicalFormSortsKeysAndDropsWhitespace() throws {
        let v = try JSONParser.parse(#" { "b" : [1, 2.5, true, null], "a": "é\n\"✓\"" } "#)
        #expect(v.canonicalString == #"{"a":"é\n\"✓\"","b":[1,2.5,true,null]}"#)
        #expect(try JSONParser.parse(v.canonicalBytes) == v)
    }

    @Test func refusesBadInput() {
        for bad in ["{", "[1,]", "{\"a\":1,\"a\":2}", "01", "\"\\x\"", "nul", "1 2", "\"\u{01}\"", "\"\\ud800\""] {
            #expect(throws: JSONParseError.self, "\(bad)") { try JSONParser.parse(bad) }
        }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xFF, 0xFE, 0x22]) }  // invalid UTF-8
    }

    @Test func depthIsLimitedWhileParsing() throws {
        let deep = String(repeating: "[", count: 1000) + String(repeating: "]", count: 1000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep, maxDepth: 64) }
        #expect(try JSONParser.parse("[[[]]]", maxDepth: 3) == [[[]]])
    }

    @Test func surrogatePairsDecode() throws {
        #expect(try JSONParser.parse(#""\ud83d\udcc5""#) == "📅")
    }

    /// The check record answers run on stored values: well-formed JSON with UTF-8 strings.
    @Test func wellFormedCheckMatchesTheGrammar() {
        func check(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBufferPointer { JSONParser.isWellFormed($0) } }
        let good = [
            #"{"a":"é\n\"✓\"","b":[1,2.5,-0.5e-3,true,false,null],"c":{}}"#, "[]", "0", "-12", #""""#,
            #""\ud83d\udcc5 \/ \b\f\r\t""#, " [ 1 , { \"k\" : [ ] } ] ", "\"Toelichting bij de stand van zaken\"",
        ]
        for text in good {
            #expect(check(Array(text.utf8)), "\(text)")
            #expect((try? JSONParser.parse(text)) != nil, "the parser agrees: \(text)")
        }
        let bad = ["", "{", "[1,]", "01", "\"\\x\"", "nul", "1 2", "\"\u{01}\"", "{\"a\"}", "{1:2}", "[1}", "\"abc", "1.", "-", "1e"]
        for text in bad {
            #expect(!check(Array(text.utf8)), "\(text)")
            #expect((try? JSONParser.parse(text)) == nil, "the parser agrees: \(text)")
        }
        #expect(!check([0x22, 0xFF, 0xFE, 0x22]), "invalid UTF-8 in a string")
        #expect(!check(Array((String(repeating: "[", count: 65) + String(repeating: "]", count: 65)).utf8)), "too deep")
    }
}

@Suite struct ClockTests {
    @Test func tickIsStrictlyMonotonicEvenWhenTimeStandsStillOrGoesBack() {
        var clock = HybridLogicalClock()
        var last = Stamp.zero
        for now: UInt64 in [1000, 1000, 1000, 999, 500, 1001, 1001] {
            let s = clock.tick(nowMilliseconds: now)
            #expect(s > last)
            last = s
        }
        #expect(last.milliseconds == 1001)
    }

    @Test func receiveTakesTheMaximumAndBumpsTheCounter() {
        var clock = HybridLogicalClock(last: Stamp(milliseconds: 1000, counter: 3))
        clock.receive(Stamp(milliseconds: 2000, counter: 7), nowMilliseconds: 1500)
        #expect(clock.last == Stamp(milliseconds: 2000, counter: 8))
        clock.receive(Stamp(milliseconds: 2000, counter: 2), nowMilliseconds: 1500)
        #expect(clock.last == Stamp(milliseconds: 2000, counter: 9))
        clock.receive(Stamp(milliseconds: 10, counter: 0), nowMilliseconds: 3000)
        #expect(clock.last == Stamp(milliseconds: 3000, counter: 0))
    }

    @Test func farAheadGuard() {
        #expect(HybridLogicalClock.isTooFarAhead(Stamp(milliseconds: 400_001, counter: 0), nowMilliseconds: 100_000, maxOffsetMilliseconds: 300_000))
        #expect(!HybridLogicalClock.isTooFarAhead(Stamp(milliseconds: 400_000, counter: 9), nowMilliseconds: 100_000, maxOffsetMilliseconds: 300_000))
    }

    @Test func stampTextForms() {
        let s = Stamp(milliseconds: 1_637_020_800_000, counter: 2)
        #expect(s.description == "2021-11-16T00:00:00.000Z/2")
        #expect(Stamp(hex: s.hex) == s)
    }
}

@Suite struct CommitTests {
    let identity = NodeIdentity()

    func sample() -> Commit {
        Commit(origin: identity.id, seq: 2, stamp: Stamp(milliseconds: 1_700_000_000_000, counter: 1), author: "anna",
               prev: [UInt8](repeating: 7, count: 32), ownerRefs: ["a1": CommitRef(origin: identity.id, seq: 1)],
               changes: [Change(record: "a1", field: "status", value: "completed", supersedes: [CommitRef(origin: identity.id, seq: 1)]),
                         Change(record: "a1", field: "partners", value: ["om", "politie"])])
    }

    @Test func canonicalBytesRoundTrip() throws {
        let c = sample()
        let decoded = try Commit(canonicalBytes: c.canonicalBytes)
        #expect(decoded == c)
        #expect(decoded.canonicalBytes == c.canonicalBytes)
    }

    @Test func signatureCoversEveryByte() throws {
        let signed = try SignedCommit.sign(sample(), with: identity)
        #expect(signed.hasValidSignature(publicKey: identity.publicKey))
        #expect(!signed.hasValidSignature(publicKey: NodeIdentity().publicKey))
        var bytes = signed.canonicalBytes
        bytes[bytes.count / 2] ^= 1
        let flipped = SignedCommit(commit: signed.commit, canonicalBytes: bytes, signature: signed.signature)
        #expect(!flipped.hasValidSignature(publicKey: identity.publicKey))
    }

    @Test func nodeIDComesFromTheKey() {
        #expect(NodeID(publicKey: identity.publicKey) == identity.id)
        #expect(identity.id.rawValue.count == 16)
        #expect(NodeID("not-an-id") == nil)
    }
}

@Suite struct SchemaTests {
    @Test func statusesAndLabels() throws {
        #expect(ProgrammeStatus.allCases.count == 7)
        #expect(ProgrammeStatus(userInput: "In uitvoering maar met vertraging") == .delayed)
        #expect(ProgrammeStatus(userInput: "✓") == .completed)
        #expect(ProgrammeStatus(userInput: "ON-TRACK") == .onTrack)
        #expect(ProgrammeStatus(userInput: "klaar") == nil)
        #expect(throws: SchemaError.self) { try ProgrammeSchema.validate(field: "status", value: "klaar") }
        do {
            try ProgrammeSchema.validate(field: "status", value: "klaar")
        } catch {
            #expect(error.message.contains("not-started"))
        }
    }

    @Test func recordIDs() {
        #expect(ProgrammeSchema.isValidRecordID("al1.r04.a02"))
        #expect(ProgrammeSchema.isValidRecordID("x:y-z_1"))
        #expect(!ProgrammeSchema.isValidRecordID(""))
        #expect(!ProgrammeSchema.isValidRecordID("a b"))
        #expect(!ProgrammeSchema.isValidRecordID("a/b"))
        #expect(!ProgrammeSchema.isValidRecordID(String(repeating: "a", count: 129)))
    }

    @Test func fieldValues() throws {
        try ProgrammeSchema.validate(field: "partners", value: ["om", "politie"])
        try ProgrammeSchema.validate(field: "due", value: "2022-06-30")
        #expect(throws: SchemaError.self) { try ProgrammeSchema.validate(field: "due", value: "30-06-2022") }
        #expect(throws: SchemaError.self) { try ProgrammeSchema.validate(field: "number", value: "3") }
        #expect(throws: SchemaError.self) { try ProgrammeSchema.validate(field: "colour", value: "red") }
        #expect(throws: SchemaError.self) { try ProgrammeSchema.validate(field: "owner", value: "Politie NL") }
    }
}

/// The merge rule's laws, on the pure function.
@Suite struct MergeLawTests {
    let a = NodeID(publicKey: NodeIdentity().publicKey)
    let b = NodeID(publicKey: NodeIdentity().publicKey)
    let c = NodeID(publicKey: NodeIdentity().publicKey)

    func v(_ origin: NodeID, _ seq: UInt64, _ ms: UInt64, _ value: String) -> FieldVersion {
        FieldVersion(value: JSONValue.string(value).canonicalBytes, stamp: Stamp(milliseconds: ms, counter: 0), origin: origin, seq: seq)
    }

    func fold(_ items: [(FieldVersion, [CommitRef])], into start: FieldFrontier? = nil) -> FieldFrontier? {
        items.reduce(start) { MergeRule.merge($0, with: $1.0, supersedes: $1.1) }
    }

    @Test func concurrentVersionsCommute() {
        let x = v(a, 1, 100, "x"), y = v(b, 1, 100, "y"), z = v(c, 1, 90, "z")
        let orders = [[x, y, z], [x, z, y], [y, x, z], [y, z, x], [z, x, y], [z, y, x]]
        let results = Set(orders.map { fold($0.map { ($0, []) }) })
        #expect(results.count == 1)
        let f = results.first!!
        #expect(f.winner == (a < b ? y : x))  // equal stamps: greater origin wins
        #expect(f.losers.count == 2)
    }

    @Test func batchingIsAssociative() {
        let base = v(a, 1, 100, "base")
        let x = (v(b, 1, 200, "x"), [base.ref])
        let y = (v(c, 1, 150, "y"), [base.ref])
        let z = (v(a, 2, 300, "z"), [base.ref, CommitRef(origin: b, seq: 1)])
        let start = fold([(base, [])])
        let left = fold([z], into: fold([x, y], into: start))
        let right = fold([y, z], into: fold([x], into: start))
        #expect(left == right)
        #expect(left?.winner == z.0)
        #expect(left?.losers == [y.0])  // y was concurrent with z's view and nobody superseded it
    }

    @Test func applyingTwiceChangesNothing() {
        let x = v(a, 1, 100, "x"), y = v(b, 1, 120, "y")
        let once = fold([(x, []), (y, [])])
        #expect(fold([(x, []), (y, []), (y, []), (x, [])]) == once)
    }

    @Test func supersedingClosesTheConflict() {
        let x = v(a, 1, 100, "x"), y = v(b, 1, 120, "y")
        let resolved = fold([(x, []), (y, []), (v(c, 1, 130, "r"), [x.ref, y.ref])])
        #expect(resolved?.losers.isEmpty == true)
        #expect(resolved?.winner.value == JSONValue.string("r").canonicalBytes)
    }
}

@Suite struct DigestTests {
    @Test func bucketSumsAreOrderFreeAndReversible() {
        let o = NodeID(publicKey: NodeIdentity().publicKey)
        let hashes = (0..<50).map { i in
            ReplicaDigest.entryHash(record: "r\(i)", field: "title", version: FieldVersion(value: Array("\"t\(i)\"".utf8), stamp: Stamp(rawValue: UInt64(i)), origin: o, seq: 1))
        }
        let forward = hashes.reduce(BucketSum.zero, +)
        let backward = hashes.reversed().reduce(BucketSum.zero, +)
        #expect(forward == backward)
        #expect(hashes.reduce(forward, -) == .zero)
        var buckets = [BucketSum](repeating: .zero, count: ReplicaDigest.bucketCount)
        let empty = ReplicaDigest.root(buckets)
        buckets[7] = forward
        #expect(ReplicaDigest.root(buckets) != empty)
        #expect(BucketSum(bytes: forward.bytes) == forward)
    }
}

@Suite struct BackoffTests {
    @Test func growsExponentiallyWithJitterUpToTheCap() {
        var b = Backoff(base: .milliseconds(100), cap: .seconds(2))
        #expect(b.fail(random: 1) == .milliseconds(100))
        #expect(b.fail(random: 1) == .milliseconds(200))
        #expect(b.fail(random: 1) == .milliseconds(400))
        for _ in 0..<10 { _ = b.fail(random: 1) }
        #expect(b.fail(random: 1) == .seconds(2))
        #expect(b.fail(random: 0) == .milliseconds(10))
        #expect(b.fail(random: 0.5) == .seconds(1))
        b.succeed()
        #expect(b.fail(random: 1) == .milliseconds(100))
    }
}

@Suite struct CommitBundleTests {
    static let exporter = NodeIdentity()

    func sample() throws -> CommitBundle {
        let identity = NodeIdentity()
        var commits: [(body: [UInt8], signature: [UInt8])] = []
        var prev: [UInt8] = []
        for seq in 1...50 {
            let commit = Commit(origin: identity.id, seq: UInt64(seq), stamp: Stamp(milliseconds: 1_700_000_000_000 + UInt64(seq), counter: 0),
                                author: "anna", prev: prev, ownerRefs: [:],
                                changes: [Change(record: "r\(seq)", field: "explanation", value: .string(String(repeating: "tekst ", count: seq)))])
            let signed = try SignedCommit.sign(commit, with: identity)
            prev = signed.hash
            commits.append((signed.canonicalBytes, signed.signature))
        }
        return CommitBundle(header: ["node": .string(Self.exporter.id.rawValue), "commits": 50,
                                     "versionVector": .object([identity.id.rawValue: 50])], commits: commits)
    }

    @Test func roundTripsCompressesAndIsSealedByTheExporter() throws {
        let bundle = try sample()
        let bytes = try bundle.encoded(signedBy: Self.exporter)
        let raw = bundle.commits.reduce(0) { $0 + $1.body.count + 64 }
        #expect(bytes.count < raw / 2)
        let decoded = try CommitBundle(decoding: bytes)
        #expect(decoded.header == bundle.header)
        #expect(decoded.commits.map(\.body) == bundle.commits.map(\.body))
        #expect(decoded.commits.map(\.signature) == bundle.commits.map(\.signature))
        #expect(decoded.exporter == Self.exporter.id && decoded.versionVector.values.first == 50)
        #expect(decoded.isSealed(by: Self.exporter.publicKey))
        // Sealed by someone else than the node its header names: decodes, but is not that node's word.
        let forged = try CommitBundle(decoding: try bundle.encoded(signedBy: NodeIdentity()))
        #expect(!forged.isSealed(by: Self.exporter.publicKey))
    }

    /// Every single-bit change anywhere in the file, and every cut, is caught: the SHA-256 in the
    /// seal covers every byte before it, and the signature covers the SHA-256. A change inside the
    /// signature itself decodes, but no longer verifies against the exporter's key.
    @Test func everyFlippedBitAndEveryCutIsCaught() throws {
        let bytes = try sample().encoded(signedBy: Self.exporter)
        var state: UInt64 = 11  // seeded, so a failure replays
        for offset in bytes.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            var altered = bytes
            altered[offset] ^= 1 << UInt8(state >> 61)
            if let decoded = try? CommitBundle(decoding: altered) {
                #expect(offset >= bytes.count - 64 && !decoded.isSealed(by: Self.exporter.publicKey), "flip at \(offset) went unnoticed")
            }
        }
        for cut in 1..<bytes.count {
            #expect(throws: BundleError.self) { try CommitBundle(decoding: Array(bytes.prefix(cut))) }
        }
        #expect(throws: BundleError.self) { try CommitBundle(decoding: Array("{\"commits\": []}".utf8)) }
        #expect(throws: BundleError.self) { try CommitBundle(decoding: bytes + [0, 1, 2]) }
    }

    /// A bundle written before bundles were signed still reads (its commits verify on their own),
    /// but carries no seal, so its header is never taken as the exporter's word.
    @Test func unsignedFormat1StillReadsWithoutASeal() throws {
        let bundle = try sample()
        let old = try bundle.encodedFormat1()
        #expect(old.starts(with: Array("progsync-bundle 1\n".utf8)))
        let decoded = try CommitBundle(decoding: old)
        #expect(decoded.seal == nil && !decoded.isSealed(by: Self.exporter.publicKey))
        #expect(decoded.commits.map(\.body) == bundle.commits.map(\.body) && decoded.header == bundle.header)
        // Its content checksum still catches a re-made stream with a changed commit.
        var tampered = bundle
        tampered.commits[3].body[10] ^= 1
        var deflater = try Gzip.Deflater()
        try deflater.write(tampered.format1Content + CommitBundle.sha256(bundle.format1Content[...]))
        let spliced = Array("progsync-bundle 1\n".utf8) + (try deflater.finish())
        #expect(throws: BundleError.self) { try CommitBundle(decoding: spliced) }
    }

    /// A small file that inflates enormously stops at the ratio bound while decompressing.
    @Test func decompressionBombStopsAtTheRatioLimit() throws {
        let header = JSONValue.object(["node": .string(Self.exporter.id.rawValue)]).canonicalBytes + [UInt8(ascii: "\n")]
        // One commit that claims 2 GiB, then 64 MiB of zeros (about 64 KiB compressed).
        var deflater = try Gzip.Deflater(level: 9)
        try deflater.write(header + [0x7f, 0xff, 0xff, 0xff])
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        for _ in 0..<64 { try deflater.write(zeros) }
        let stream = try deflater.finish()
        #expect(stream.count < 256 << 10)
        let limits = CommitBundle.Limits(maxBytes: 1 << 30, maxRatio: 32, ratioFreeBytes: 1 << 20)
        for file in [CommitBundle.magic + stream + (try Self.seal(CommitBundle.magic + stream)), CommitBundle.unsignedMagic + stream] {
            do {
                _ = try CommitBundle(decoding: file, limits: limits)
                Issue.record("the bomb was accepted")
            } catch {
                #expect(error.description.contains("decompression bomb"), "\(error)")
            }
        }
        // Zeros from the start: the header line runs past its bound first.
        var zerosOnly = try Gzip.Deflater(level: 9)
        for _ in 0..<8 { try zerosOnly.write(zeros) }
        let plain = try zerosOnly.finish()
        #expect(throws: BundleError.self) { try CommitBundle(decoding: CommitBundle.magic + plain + (try Self.seal(CommitBundle.magic + plain))) }
        // The same stream well under the bound is refused for what it is (truncated), not its size.
        let roomy = CommitBundle.Limits(maxBytes: 1 << 30, maxRatio: 100_000)
        #expect { try CommitBundle(decoding: CommitBundle.unsignedMagic + stream, limits: roomy) } throws: { error in
            "\(error)".contains("truncated")
        }
    }

    static func seal(_ file: [UInt8]) throws -> [UInt8] { try CommitBundle.seal(file, signedBy: exporter) }

    @Test func emptyCommitsAndHeadersWithoutANodeAreRefused() throws {
        func file(_ content: [UInt8]) throws -> [UInt8] {
            var deflater = try Gzip.Deflater()
            try deflater.write(content)
            let bytes = CommitBundle.magic + (try deflater.finish())
            return bytes + (try Self.seal(bytes))
        }
        let header = JSONValue.object(["node": .string(Self.exporter.id.rawValue)]).canonicalBytes + [UInt8(ascii: "\n")]
        #expect(try CommitBundle(decoding: try file(header)).commits.isEmpty)
        #expect(throws: BundleError.self) { try CommitBundle(decoding: try file(header + [0, 0, 0, 0] + [UInt8](repeating: 0, count: 64))) }
        #expect(throws: BundleError.self) { try CommitBundle(decoding: try file(Array("{\"node\":\"x\"}\n".utf8))) }
        #expect(throws: BundleError.self) { try CommitBundle(decoding: try file(Array("not json\n".utf8))) }
    }
}
