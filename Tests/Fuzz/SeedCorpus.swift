import Foundation
@testable import ProgSyncCore

/// A few valid inputs per target, made with the real encoders (`PROGSYNC_FUZZ_WRITE_SEEDS=dir`).
enum SeedCorpus {
    static func write(to folder: URL) throws {
        let fuzzer = ApplyFuzzer.shared
        let jenv = fuzzer.signers[0]
        let politie = fuzzer.signers[1]
        let stamp = Stamp(milliseconds: fuzzer.now, counter: 0)
        let first = try SignedCommit.sign(Commit(
            origin: jenv.id, seq: 1, stamp: stamp, author: "jan", prev: [],
            changes: [Change(record: "al1.r01.a03", field: "owner", value: .string("comensha")),
                      Change(record: "al1.r01.a03", field: "title", value: .string("Één \"titel\"\n")),
                      Change(record: "al1.r01.a03", field: "partners", value: .array([.string("politie"), .string("jenv")]))]),
            with: jenv)
        let second = try SignedCommit.sign(Commit(
            origin: politie.id, seq: 1, stamp: Stamp(milliseconds: fuzzer.now + 5, counter: 2), author: "piet", prev: [],
            ownerRefs: ["al1.r01.a03": first.ref, "al2": first.ref],
            changes: [Change(record: "al1.r01.a03", field: "status", value: .string("delayed"), supersedes: [first.ref]),
                      Change(record: "al1.r01.a03", field: "number", value: .int(-12))]),
            with: politie)
        let third = try SignedCommit.sign(Commit(
            origin: jenv.id, seq: 2, stamp: Stamp(milliseconds: fuzzer.now + 9, counter: 0), author: "jan", prev: first.hash,
            changes: [Change(record: "al2", field: "due", value: .object(["a": .double(1.5), "b": .null, "c": .bool(true)]))]),
            with: jenv)
        let commits = [first, second, third]

        var seeds: [String: [[UInt8]]] = [:]
        seeds["commit"] = commits.map(\.canonicalBytes)
        seeds["wire"] = [CommitWire.json(commits).canonicalBytes, CommitWire.json([second]).canonicalBytes]
        let header: JSONValue = .object(["node": .string(jenv.id.rawValue), "versionVector": .object([jenv.id.rawValue: .int(2)])])
        let bundle = CommitBundle(header: header, commits: commits.map { ($0.canonicalBytes, $0.signature) })
        var payload = header.canonicalBytes + [UInt8(ascii: "\n")]
        for c in commits {
            let n = UInt32(c.canonicalBytes.count)
            payload += [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + c.canonicalBytes + c.signature
        }
        seeds["bundle"] = [[0] + (try bundle.encoded(signedBy: jenv)), [0] + (try bundle.encodedFormat1()), [1] + payload]
        seeds["json"] = [
            #"{"a":[1,-2.5e3,true,false,null],"b":{"c":"\u00e9\ud83d\ude00\n\t\\\""},"d":1.0e-7}"#,
            #"[[[[[]]]],{},"",0,-0,9223372036854775807,-9223372036854775808,1e400]"#,
            " \"plain\" ",
        ].map { Array($0.utf8) }
        seeds["csv"] = [
            "id,title,status\nal1,\"Een, \"\"twee\"\"\",delayed\r\nal2,\"regel\nregel\",\n",
            "sep=;\nid;title\nal1;x;y\n\n",
            "\u{FEFF}id;title;due\r\nal1;titel;2027-01-01\r",
        ].map { Array($0.utf8) }
        seeds["registry"] = [fuzzer.registry.json.canonicalBytes]
        // Programs for the apply target: commits, batches, retries and releases (see ApplyFuzzer.run).
        seeds["apply"] = [
            [4, 0, 3, 2, 2, 4, 4, 0, 4, 1, 1, 1, 2, 0, 5, 0, 1, 2, 1, 1, 0],
            [4, 0x01, 5, 0, 1, 200, 3, 4, 0x81, 3, 1, 2, 9, 5, 0, 1, 2],
        ] + (1...4).map { k in (0..<160).map { i in UInt8(truncatingIfNeeded: (i &* 2_654_435_761 &+ k &* 40_503) >> 7) } }

        for (target, inputs) in seeds {
            let dir = folder.appendingPathComponent(target)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for (i, bytes) in inputs.enumerated() {
                try Data(bytes).write(to: dir.appendingPathComponent("seed-\(i)"))
            }
        }
    }
}
