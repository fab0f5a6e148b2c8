import Foundation
import ProgSyncCore
import Testing

/// The audit log's hash chain: each kind of tampering is found, at the line it touched.
@Suite struct AuditChainTests {
    /// Five chained lines and the head after the last.
    static func log(count: Int = 5) -> (lines: [[UInt8]], head: AuditChain.Head) {
        var lines: [[UInt8]] = []
        var head = AuditChain.Head(seq: 0, hash: AuditChain.genesis)
        for i in 1...count {
            let line = AuditChain.line([
                "time": .string("2026-12-02T10:00:0\(i).000Z"), "action": "local-write", "object": .string("al1.r01.a0\(i)"),
                "result": "refused", "origin": "local", "actor": "anna", "reason": "forbidden",
            ], seq: head.seq + 1, prev: head.hash)
            head = AuditChain.Head(seq: head.seq + 1, hash: AuditChain.hash(line))
            lines.append(line)
        }
        return (lines, head)
    }

    static func file(_ lines: [[UInt8]]) -> [UInt8] { lines.flatMap { $0 + [0x0A] } }

    @Test func anUntouchedLogVerifies() {
        let (lines, head) = Self.log()
        let v = AuditChain.verify(Self.file(lines), head: head)
        #expect(v.ok, "\(v.problems)")
        #expect(v.lines == 5)
        #expect(v.last == head)
    }

    @Test func anEditedLineIsFoundAtItsNumber() {
        var (lines, head) = Self.log()
        lines[2] = Array(String(decoding: lines[2], as: UTF8.self).replacingOccurrences(of: "refused", with: "allowed").utf8)
        let v = AuditChain.verify(Self.file(lines), head: head)
        #expect(v.problems.map(\.line) == [3], "\(v.problems)")
    }

    @Test func aRemovedLineIsFoundWhereTheGapIs() {
        var (lines, head) = Self.log()
        lines.remove(at: 1)
        let v = AuditChain.verify(Self.file(lines), head: head)
        #expect(v.problems.map(\.line) == [2], "\(v.problems)")
        #expect(v.problems.first?.message.contains("removed") == true)
    }

    @Test func reorderedLinesAreFound() {
        var (lines, head) = Self.log()
        lines.swapAt(1, 2)
        let v = AuditChain.verify(Self.file(lines), head: head)
        #expect(!v.ok)
        #expect(v.problems.first?.line == 2, "\(v.problems)")
    }

    @Test func cuttingTheTailIsFoundOnlyWithTheHead() {
        let (lines, head) = Self.log()
        let cut = Self.file(Array(lines.prefix(3)))
        // The chain alone cannot tell a short log from a cut one: the head can.
        #expect(AuditChain.verify(cut, head: nil).ok)
        let v = AuditChain.verify(cut, head: head)
        #expect(v.problems.map(\.line) == [4], "\(v.problems)")
        #expect(v.problems.first?.message.contains("last 2 line(s) were removed") == true)
    }

    @Test func anEditedLastLineIsFoundByTheHead() {
        var (lines, head) = Self.log()
        lines[4] = Array(String(decoding: lines[4], as: UTF8.self).replacingOccurrences(of: "anna", with: "bert").utf8)
        #expect(AuditChain.verify(Self.file(lines), head: nil).ok)
        #expect(AuditChain.verify(Self.file(lines), head: head).problems.map(\.line) == [5])
    }

    @Test func removingTheFirstLineIsFound() {
        let (lines, head) = Self.log()
        let v = AuditChain.verify(Self.file(Array(lines.dropFirst())), head: head)
        #expect(v.problems.first?.line == 1, "\(v.problems)")
    }

    @Test func aDamagedLineAndAChainBreakMarkerAreReported() {
        var (lines, head) = Self.log()
        lines[1] = Array("not json".utf8)
        #expect(AuditChain.verify(Self.file(lines), head: head).problems.map(\.line).contains(2))
        let marker = AuditChain.line([
            "time": "2026-12-02T10:00:09.000Z", "action": .string(AuditChain.chainBreakAction), "object": "audit.jsonl",
            "result": "detected", "origin": "startup", "actor": "progsyncd", "detail": "lines were removed",
        ], seq: head.seq + 1, prev: head.hash)
        let (intact, _) = Self.log()
        let v = AuditChain.verify(Self.file(intact + [marker]), head: nil)
        #expect(v.problems.map(\.line) == [6], "\(v.problems)")
    }

    @Test func anIncompleteLastLineIsNotCounted() {
        let (lines, head) = Self.log()
        let v = AuditChain.verify(Self.file(lines) + Array("{\"seq\":6".utf8), head: head)
        #expect(v.ok)
        #expect(v.lines == 5)
        #expect(v.incompleteBytes == 8)
    }
}
