import Foundation

/// One dedicated OS thread that runs the lease engine and nothing else: the actor's serial executor and the task
/// executor of every revert and of the deadline timer.
///
/// Why not the global cooperative pool: it has one thread per core (two here), and request handling, spec resolution
/// (a `--name` scan of /proc), NIO hand-offs and driver `apply` calls all run there. Whatever a client makes slow must
/// never delay a revert, so the engine's own work, including the drivers' `revert`, which the revert tasks run with
/// this thread as their preferred task executor, happens on a thread no client work is ever scheduled on.
/// (Hand-written: neither Foundation nor NIO offers a Swift-concurrency executor backed by one private thread.)
public final class EngineThread: SerialExecutor, TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var head = 0
    public let name: String

    public init(name: String = "chaos-agent.leases") {
        self.name = name
        let thread = Thread { [unowned(unsafe) self] in self.loop() }
        thread.name = name
        // Deliberately immortal (the thread keeps `self` alive): an executor must outlive every job and actor on it.
        _ = Unmanaged.passRetained(self)
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        condition.lock()
        jobs.append(unowned)
        condition.signal()
        condition.unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor { UnownedTaskExecutor(ordinary: self) }

    /// Whether the caller runs on this thread (tests use it to prove where reverts run).
    public var isCurrent: Bool { (Thread.current.threadDictionary[Self.key] as? EngineThread) === self }
    private static let key = "chaos-agent.engine-thread"

    private func loop() {
        Thread.current.threadDictionary[Self.key] = self
        while true {
            condition.lock()
            while head == jobs.count { condition.wait() }
            let job = jobs[head]
            head += 1
            if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            condition.unlock()
            job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        }
    }
}
