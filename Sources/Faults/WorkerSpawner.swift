import AgentCore
import CShims
import Cgroups
import Foundation

/// Starts stress workers from one thread that lives as long as the agent: PR_SET_PDEATHSIG fires when the *thread*
/// that created a child exits, so spawning from a pool thread that may retire would kill workers early.
final class WorkerSpawner: Sendable {
    static let shared = WorkerSpawner()

    /// One immortal thread (`BlockingPool` threads never retire).
    private let thread = BlockingPool(name: "chaos-worker-spawner", threads: 1)

    private init() {}

    private func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await thread.run(body)
    }

    struct Spawned: Sendable {
        var pid: Int32
        var clone3: Bool
    }

    /// Starts `executable argv...` inside the cgroup directory `cgroupDir` (absolute).
    func spawn(executable: String, argv: [String], cgroupDir: String) async throws -> Spawned {
        let result: Result<Spawned, CgroupError> = await onThread {
            let dirFD = open(cgroupDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard dirFD >= 0 else { return .failure(CgroupError("cannot open \(cgroupDir): \(String(cString: strerror(errno)))")) }
            defer { close(dirFD) }
            let procsFD = open(cgroupDir + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
            defer { if procsFD >= 0 { close(procsFD) } }
            var cargs: [UnsafeMutablePointer<CChar>?] = ([executable] + argv).map { strdup($0) } + [nil]
            defer { for p in cargs { free(p) } }
            var used: Int32 = 0
            let pid = cargs.withUnsafeMutableBufferPointer { buf in
                cshim_spawn_in_cgroup(executable, buf.baseAddress, dirFD, procsFD, &used)
            }
            guard pid > 0 else {
                return .failure(CgroupError("cannot start a worker in \(cgroupDir): \(String(cString: strerror(errno)))"))
            }
            return .success(Spawned(pid: pid, clone3: used == 1))
        }
        return try result.get()
    }

    /// The agent's own executable, which doubles as the worker (`chaos-agentd worker ...`).
    static let executable: String = {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }()

    /// Waits (up to `timeout`) for the killed worker `pid` to exit and collects it, so it does not stay a zombie.
    /// Returns at once when it is not our child (the agent restarted since it was spawned).
    static func reap(_ pid: Int32, timeout: Duration) async {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && errno == ECHILD) { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
