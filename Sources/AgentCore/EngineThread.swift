import Foundation

/// One dedicated OS thread that runs the lease engine and nothing else: the actor's serial executor, the task
/// executor of every revert and of the deadline timer, and the timer itself.
///
/// Why not the global cooperative pool: it has one thread per core (two here), and request handling, spec resolution
/// (a `--name` scan of /proc), NIO hand-offs and driver `apply` calls all run there. Whatever a client makes slow must
/// never delay a revert, so the engine's own work, including the drivers' `revert`, which the revert tasks run with
/// this thread as their preferred task executor, happens on a thread no client work is ever scheduled on. Its sleeps
/// (`SystemClock.sleep` called on it) wake from this thread's own timed wait on CLOCK_MONOTONIC, not from libdispatch's
/// timer threads, which share the CPU with everything else; and the thread runs at nice -10 (root) so a busy host
/// still gives it the CPU first.
/// (Hand-written: neither Foundation nor NIO offers a Swift-concurrency executor backed by one private thread.)
public final class EngineThread: SerialExecutor, TaskExecutor, @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [UnownedJob] = []
    private var head = 0
    private var timers: [UInt64: (deadline: Double, continuation: CheckedContinuation<Void, any Error>)] = [:]
    private var nextTimer: UInt64 = 0
    public let name: String

    public init(name: String = "chaos-agent.leases") {
        self.name = name
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        // Timed waits on the monotonic clock: a wall-clock step neither shortens nor stretches them.
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
        let thread = Thread { [unowned(unsafe) self] in self.loop() }
        // Deliberately immortal (the thread keeps `self` alive): an executor must outlive every job and actor on it.
        _ = Unmanaged.passRetained(self)
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        pthread_mutex_lock(mutex)
        jobs.append(unowned)
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor { UnownedTaskExecutor(ordinary: self) }

    /// Whether the caller runs on this thread (tests use it to prove where reverts run).
    public var isCurrent: Bool { Self.current === self }

    /// The engine thread the caller runs on, if any.
    public static var current: EngineThread? { Thread.current.threadDictionary[key] as? EngineThread }
    private static let key = "chaos-agent.engine-thread"

    /// Sleeps `duration` (monotonic), woken by this thread's own timed wait. Throws `CancellationError` when the task
    /// is cancelled.
    public func sleep(for duration: Duration) async throws {
        let c = duration.components
        let deadline = Self.monotonic() + max(0, Double(c.seconds) + Double(c.attoseconds) / 1e18)
        pthread_mutex_lock(mutex)
        nextTimer += 1
        let id = nextTimer
        pthread_mutex_unlock(mutex)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                pthread_mutex_lock(mutex)
                if Task.isCancelled {
                    pthread_mutex_unlock(mutex)
                    c.resume(throwing: CancellationError())
                    return
                }
                timers[id] = (deadline, c)
                pthread_cond_signal(cond)
                pthread_mutex_unlock(mutex)
            }
        } onCancel: {
            pthread_mutex_lock(mutex)
            let c = timers.removeValue(forKey: id)?.continuation
            pthread_mutex_unlock(mutex)
            c?.resume(throwing: CancellationError())
        }
    }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    private func loop() {
        Thread.current.threadDictionary[Self.key] = self
        // Named for ps/top and the tests (`ca-leases`); and ahead of request handling for the CPU: on Linux
        // setpriority(PRIO_PROCESS, 0) sets the calling thread's nice value, and root may lower it. A flood of
        // connections keeps the event loops busy; the thread that reverts leases must still run at once.
        Thread.current.name = "ca-leases"
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -10)
        while true {
            pthread_mutex_lock(mutex)
            var due: [CheckedContinuation<Void, any Error>] = []
            while head == jobs.count {
                let now = Self.monotonic()
                let ready = timers.filter { $0.value.deadline <= now }
                if !ready.isEmpty {
                    for id in ready.keys { due.append(timers.removeValue(forKey: id)!.continuation) }
                    break
                }
                if let next = timers.values.map(\.deadline).min() {
                    var ts = timespec()
                    ts.tv_sec = Int(next)
                    ts.tv_nsec = Int((next - Double(Int(next))) * 1e9)
                    pthread_cond_timedwait(cond, mutex, &ts)
                } else {
                    pthread_cond_wait(cond, mutex)
                }
            }
            if !due.isEmpty {
                pthread_mutex_unlock(mutex)
                // Resuming enqueues each sleeper's job here (it prefers this executor): outside the lock.
                due.forEach { $0.resume() }
                continue
            }
            let job = jobs[head]
            head += 1
            if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        }
    }
}
