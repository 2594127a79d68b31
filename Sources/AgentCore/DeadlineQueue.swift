import Foundation

/// Lease deadlines ordered by time: a binary min-heap with lazy deletion, so the scheduler can always ask for the
/// single next deadline. Updating a key pushes a new entry; stale entries are skipped when they surface.
public struct DeadlineQueue: Sendable {
    private struct Entry: Sendable {
        var deadline: Date
        var id: String
        var generation: UInt64
    }
    private var heap: [Entry] = []
    private var current: [String: (deadline: Date, generation: UInt64)] = [:]
    private var generation: UInt64 = 0

    public init() {}

    public var count: Int { current.count }
    public var isEmpty: Bool { current.isEmpty }

    /// Sets (or moves) the deadline of `id`.
    public mutating func schedule(_ id: String, at deadline: Date) {
        generation += 1
        current[id] = (deadline, generation)
        push(Entry(deadline: deadline, id: id, generation: generation))
        if heap.count > 64 && heap.count > 4 * current.count { rebuild() }
    }

    public mutating func remove(_ id: String) {
        current.removeValue(forKey: id)
    }

    /// The earliest live deadline.
    public mutating func peek() -> (id: String, deadline: Date)? {
        dropStale()
        return heap.first.map { ($0.id, $0.deadline) }
    }

    /// Removes and returns every id whose deadline is at or before `now`, earliest first.
    public mutating func popDue(now: Date) -> [String] {
        var out: [String] = []
        while let top = peek(), top.deadline <= now {
            popTop()
            current.removeValue(forKey: top.id)
            out.append(top.id)
        }
        return out
    }

    private mutating func dropStale() {
        while let top = heap.first {
            if let live = current[top.id], live.generation == top.generation { return }
            popTop()
        }
    }

    private mutating func rebuild() {
        heap = current.map { Entry(deadline: $0.value.deadline, id: $0.key, generation: $0.value.generation) }
        heap.sort { $0.deadline < $1.deadline }  // a sorted array is a valid min-heap
    }

    private mutating func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].deadline < heap[parent].deadline else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private mutating func popTop() {
        guard !heap.isEmpty else { return }
        heap.swapAt(0, heap.count - 1)
        heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var smallest = i
            if l < heap.count && heap[l].deadline < heap[smallest].deadline { smallest = l }
            if r < heap.count && heap[r].deadline < heap[smallest].deadline { smallest = r }
            if smallest == i { break }
            heap.swapAt(i, smallest)
            i = smallest
        }
    }
}
