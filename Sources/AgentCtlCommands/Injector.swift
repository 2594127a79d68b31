import AgentAPI
import AgentClient
import ArgumentParser
import Dispatch
import Foundation

/// Sends the inject request, prints the result, and for `--wait` follows the fault until it ends.
struct Injector {
    var global: GlobalOptions
    var wait: Bool
    var idempotencyKey: String? = nil

    func run(_ request: FaultRequest) async throws {
        let json = global.json
        let wait = self.wait
        let key = idempotencyKey
        try await global.withClient { client in
            // Watch for Ctrl-C before the fault exists, so one that lands mid-request still reverts it.
            let signals = wait ? SignalWatcher([SIGINT, SIGTERM]) : nil
            defer { signals?.stop() }
            let fault = try await client.inject(request, idempotencyKey: key)
            if json { try Terminal.printJSON(fault) } else { Terminal.stdout(fault.id) }
            Terminal.flush()
            guard let signals else { return }
            try await Waiter(client: client, signals: signals).follow(fault)
        }
    }
}

/// `--wait`: a countdown on stderr until the fault reaches a final state; SIGINT/SIGTERM revert it.
struct Waiter: Sendable {
    let client: AgentClient
    let signals: SignalWatcher
    var pollInterval: Duration = .seconds(1)
    /// Without a TTY, one progress line this often.
    var plainInterval: TimeInterval = 10

    enum Outcome: Sendable {
        case ended(FaultObject)
        case signal(Int32)
    }

    func follow(_ initial: FaultObject) async throws {
        let tty = Terminal.stderrIsTTY
        let outcome = try await withThrowingTaskGroup(of: Outcome?.self) { group in
            group.addTask { await signals.next().map { Outcome.signal($0) } }
            group.addTask { try await poll(initial, tty: tty) }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw CtlFailure(CtlExitCode.failure, "lost track of \(initial.id)")
        }
        if tty { Terminal.stderrRaw("\r\u{1B}[K") }
        switch outcome {
        case .signal:
            do {
                let fault = try await client.revert(initial.id)
                if fault.state.isFinal {
                    Terminal.stderr("reverted \(fault.id)")
                } else {
                    printError(
                        "\(fault.id) is still \(fault.state.rawValue)\(fault.error.map { ": \($0)" } ?? "")",
                        hint: "the agent keeps retrying the revert")
                }
            } catch {
                _ = CtlMain.report(error)
                printError("could not revert \(initial.id); it ends by itself at \(Format.time(initial.expiresAt))")
            }
            throw ExitCode(CtlExitCode.interrupted)
        case .ended(let fault):
            if fault.state == .reverted {
                Terminal.stderr("\(fault.id) reverted")
                return
            }
            throw CtlFailure(
                CtlExitCode.failure, "\(fault.id) failed\(fault.error.map { ": \($0)" } ?? "")",
                hint: "'chaos-agentctl get \(fault.id)' shows the details")
        }
    }

    private func poll(_ initial: FaultObject, tty: Bool) async throws -> Outcome? {
        var current = initial
        var lastPlainLine: Date?
        var unreachableSince: Date?
        while true {
            if current.state.isFinal { return .ended(current) }
            let line = Self.progress(current)
            if tty {
                Terminal.stderrRaw("\r" + line + "\u{1B}[K")
            } else if lastPlainLine.map({ Date().timeIntervalSince($0) >= plainInterval - 0.5 }) ?? true {
                Terminal.stderr(line)
                lastPlainLine = Date()
            }
            // Beat at least three times per heartbeat interval.
            let beat = current.heartbeat.flatMap { Units.parseDuration($0) }.map { $0 / 3 }
            try await Task.sleep(for: beat.map { min($0, pollInterval) } ?? pollInterval)
            do {
                // A heartbeat fault is kept alive by this loop: the heartbeat answer is the fault, so it doubles as
                // the poll. Once the fault has ended, the heartbeat is refused (409) and a plain get follows.
                if current.heartbeat != nil, !current.state.isFinal {
                    do {
                        current = try await client.heartbeat(initial.id)
                    } catch AgentClientError.http(409, _) {
                        current = try await client.get(initial.id)
                    }
                } else {
                    current = try await client.get(initial.id)
                }
                unreachableSince = nil
            } catch let error as AgentClientError {
                guard case .unreachable = error else { throw error }
                // The agent may be restarting (it reverts on the way down and up); give it a while.
                let since = unreachableSince ?? Date()
                unreachableSince = since
                if Date().timeIntervalSince(since) > 30 { throw error }
            }
        }
    }

    static func progress(_ f: FaultObject, now: Date = Date()) -> String {
        switch f.state {
        case .reverting:
            return "\(f.id) reverting\(f.error.map { " - retrying: \($0)" } ?? "")"
        default:
            return "\(f.id) \(f.state.rawValue) - \(Format.clock(f.expiresAt.timeIntervalSince(now))) left"
        }
    }
}

/// Delivers SIGINT/SIGTERM as values instead of letting them kill the process; `stop()` restores the defaults.
final class SignalWatcher: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]
    private let signals: [Int32]
    private let stream: AsyncStream<Int32>

    init(_ signals: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream(bufferingPolicy: .bufferingNewest(4))
        self.stream = stream
        self.signals = signals
        self.sources = signals.map { number in
            _ = Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }

    /// The next signal, or nil when the waiting task is cancelled. Call from one task at a time.
    func next() async -> Int32? {
        var iterator = stream.makeAsyncIterator()
        return await iterator.next()
    }

    func stop() {
        for source in sources { source.cancel() }
        for number in signals { _ = Glibc.signal(number, SIG_DFL) }
    }
}
