import ProgSyncCore
import Synchronization

/// Answers to list questions (the records a filter matches, activities per status), kept until
/// the writer's next commit, whatever made it: a local write, a partner's commits, an import or
/// a repair. Paging through 100k activities then slices one list made once, where every page
/// used to count the matches again and walk an OFFSET.
final class ListCache: Sendable {
    enum Key: Hashable, Sendable {
        /// Every record a filter matches (limit and offset zero), in id order.
        case records(RecordQuery)
        /// Live records of a kind per status.
        case statusCounts(RecordKind)
    }

    private struct State: Sendable {
        /// Counts the writer's commits; an answer is kept only for the generation it was read in.
        var generation: UInt64 = 0
        var entries: [Key: (value: any Sendable, used: UInt64)] = [:]
        var uses: UInt64 = 0
    }

    private let state = Mutex(State())
    /// Filters differ by text search and owner; a few lists of 100k ids are a few MB each.
    static let capacity = 8

    func writerCommitted() {
        state.withLock {
            $0.generation &+= 1
            $0.entries.removeAll(keepingCapacity: true)
        }
    }

    /// The kept answer for `key`, or `compute`'s, kept when no commit came in between.
    func value<Value: Sendable>(_ key: Key, compute: () throws -> Value) rethrows -> Value {
        let (hit, generation) = state.withLock { s -> (Value?, UInt64) in
            s.uses += 1
            guard let entry = s.entries[key], let value = entry.value as? Value else { return (nil, s.generation) }
            s.entries[key]?.used = s.uses
            return (value, s.generation)
        }
        if let hit { return hit }
        // Read after the generation: a commit in between makes this answer newer than its
        // generation, and it is dropped; never older.
        let value = try compute()
        state.withLock { s in
            guard s.generation == generation else { return }
            if s.entries.count >= Self.capacity, let oldest = s.entries.min(by: { $0.value.used < $1.value.used })?.key {
                s.entries[oldest] = nil
            }
            s.entries[key] = (value, s.uses)
        }
        return value
    }
}
