import Foundation
import ProgSyncCore
import ProgSyncStore
import Testing

/// List answers are kept between commits (ListCache): every commit, local or a partner's, must
/// show in the next page and count.
@Suite struct ListCacheTests {
    let network = TestNetwork(nodes: [("coord", "jenv"), ("pol", "politie")])

    func activity(_ id: String, owner: String, status: String? = nil) -> [FieldWrite] {
        [FieldWrite(record: id, field: "kind", value: "activity"), FieldWrite(record: id, field: "owner", value: .string(owner))]
            + (status.map { [FieldWrite(record: id, field: "status", value: .string($0))] } ?? [])
    }

    @Test func everyCommitShowsInTheNextPageAndCount() throws {
        defer { network.cleanUp() }
        let coord = try network.replica("coord")
        let pol = try network.replica("pol")
        try coord.commitLocal(author: "c", writes: (0..<30).flatMap { activity(String(format: "a.%02d", $0), owner: "politie", status: "on-track") })
        var page = RecordQuery()
        page.kind = "activity"
        page.limit = 10
        page.offset = 20
        let before = try pol.recordIDs(page)
        #expect(before.total == 0 && before.ids.isEmpty)
        // A partner's commits.
        try pol.apply(try allCommits(coord))
        let after = try pol.recordIDs(page)
        #expect(after.total == 30 && after.ids == (20..<30).map { String(format: "a.%02d", $0) })
        #expect(try pol.recordIDs(page) == after, "asked again, the same answer")
        #expect(try pol.statusCounts(kind: .activity)["\"on-track\""] == 30)
        // A local write (the coordinator's): a new record, a status changed, a record deleted;
        // then the same commit reaches the partner.
        #expect(try coord.recordIDs(page).total == 30)
        #expect(try coord.statusCounts(kind: .activity)["\"on-track\""] == 30)
        try coord.commitLocal(author: "c", writes: activity("a.30", owner: "politie") + [
            FieldWrite(record: "a.00", field: "status", value: "delayed"), FieldWrite(record: "a.01", field: "deleted", value: true),
        ])
        try pol.apply(try allCommits(coord))
        for replica in [coord, pol] {
            let counts = try replica.statusCounts(kind: .activity)
            #expect(counts["\"on-track\""] == 28 && counts["\"delayed\""] == 1 && counts[nil] == 1, "\(counts)")
            let later = try replica.recordIDs(page)
            #expect(later.total == 30 && later.ids.first == "a.21" && later.ids.last == "a.30", "\(later)")
            // Filters are kept apart.
            var delayed = RecordQuery()
            delayed.status = "delayed"
            #expect(try replica.recordIDs(delayed).ids == ["a.00"])
            var gone = RecordQuery()
            gone.deleted = .only
            #expect(try replica.recordIDs(gone).ids == ["a.01"])
        }
        // Pages far past the end are empty, with the right total.
        page.offset = Int.max
        let past = try pol.recordIDs(page)
        #expect(past.ids.isEmpty && past.total == 30)
    }
}
