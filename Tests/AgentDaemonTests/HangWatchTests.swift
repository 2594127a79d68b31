import Foundation
import Testing

@testable import AgentDaemon

/// The hang watchdog's verdicts, fed through a real pipe. The watched pid is this test process (alive throughout).
@Suite("Hang watchdog", .timeLimit(.minutes(1)))
struct HangWatchTests {
    /// Runs the watch on a pipe on its own thread; `feed` writes to the other end.
    func verdict(
        dueSilence: Double = 0.3, hang: Double = 0.6,
        journal: @escaping @Sendable () -> (count: Int, earliestExpiry: Double?)? = { nil }, _ feed: (Int32) -> Void
    ) async -> HangWatch.Verdict {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        var w = HangWatch(agentPID: getpid(), dueSilence: dueSilence, hang: hang)
        w.journal = journal
        let watch = w
        let readFD = fds[0]
        let result = Task.detached { watch.watch(input: readFD) }
        feed(fds[1])
        let v = await result.value
        close(fds[0])
        return v
    }

    func send(_ fd: Int32, _ line: String) { _ = line.withCString { write(fd, $0, strlen($0)) } }

    @Test func goodbyeThenCloseIsACleanExit() async {
        let v = await verdict { fd in
            send(fd, "B 1 5.000\n")
            send(fd, "bye\n")
            close(fd)
        }
        #expect(v == .cleanExit)
    }

    @Test func closeWithoutGoodbyeMeansTheAgentDied() async {
        let v = await verdict { fd in
            send(fd, "B 2 5.000\n")
            close(fd)
        }
        #expect(v == .died)
    }

    @Test func silenceAfterADueDeadlineIsAHang() async {
        var fd: Int32 = -1
        let v = await verdict(dueSilence: 0.3, hang: 60) { w in
            fd = w
            send(w, "B 1 0.100\n")  // due in 0.1 s, then nothing more
        }
        close(fd)
        guard case .hung(let why) = v else { Issue.record("got \(v)"); return }
        #expect(why.contains("deadline"))
    }

    @Test func longSilenceWithActiveFaultsIsAHangEvenWithFarDeadlines() async {
        var fd: Int32 = -1
        let v = await verdict(dueSilence: 0.3, hang: 0.5) { w in
            fd = w
            send(w, "B 3 3600.000\n")
        }
        close(fd)
        guard case .hung(let why) = v else { Issue.record("got \(v)"); return }
        #expect(why.contains("3 fault(s) active"))
    }

    @Test func beatsKeepItQuietAndSilenceWithoutFaultsIsNoHang() async {
        let v = await verdict(dueSilence: 2, hang: 3) { fd in
            for _ in 0..<8 {
                send(fd, "B 1 0.050\n")  // always due soon, but beating
                usleep(100_000)
            }
            send(fd, "B 0 -1\n")
            usleep(700_000)  // silent, with nothing active: no reason to act
            send(fd, "bye\n")
            close(fd)
        }
        #expect(v == .cleanExit)
    }

    /// The race the beats alone miss: the last beat went out before a fault was applied, then the agent stopped. The
    /// journal names the fault and its deadline, mapped through the beat's lease time.
    @Test func aFaultAppliedAfterTheLastBeatIsFoundInTheJournal() async {
        var fd: Int32 = -1
        let leaseNow = 1_800_000_000.0
        let v = await verdict(dueSilence: 0.3, hang: 60, journal: { (1, leaseNow + 0.2) }) { w in
            fd = w
            send(w, "B 0 -1 \(leaseNow)\n")
        }
        close(fd)
        guard case .hung(let why) = v else { Issue.record("got \(v)"); return }
        #expect(why.contains("deadline"))
    }
}
