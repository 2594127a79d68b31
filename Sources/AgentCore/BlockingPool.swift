import Foundation

/// A few dedicated threads for synchronous work that may take a while (resolving a spec: a /proc scan, pattern
/// matching, statfs on a path a client named), so that it occupies neither the engine's thread nor the cooperative
/// pool that serves requests. Work queues when every thread is busy: a slow request delays other requests' prepare
/// step, never a revert.
public final class BlockingPool: @unchecked Sendable {
    private let condition = NSCondition()
    private var work: [@Sendable () -> Void] = []

    public init(name: String, threads: Int) {
        for i in 0..<max(1, threads) {
            let threadName = String("ca-\(name.split(separator: ".").last ?? "pool")-\(i)".prefix(15))
            let t = Thread { [unowned(unsafe) self] in
                Thread.current.name = threadName
                self.loop()
            }
            t.name = "\(name)-\(i)"
            t.start()
        }
        // Immortal, like `EngineThread`: the threads hold the pool.
        _ = Unmanaged.passRetained(self)
    }

    /// Runs `body` on one of the pool's threads and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            submit { c.resume(with: Result { try body() }) }
        }
    }

    /// Runs `body`, which cannot fail, on one of the pool's threads.
    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
            submit { c.resume(returning: body()) }
        }
    }

    /// Queues `job` without waiting for it (a pool of one thread runs jobs in the order they were submitted).
    public func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        work.append(job)
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while work.isEmpty { condition.wait() }
            let job = work.removeFirst()
            condition.unlock()
            job()
        }
    }
}
