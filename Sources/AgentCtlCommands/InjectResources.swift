import AgentAPI
import ArgumentParser
import Foundation

/// `inject disk-fill`: fill a file system up to a size or a free-space mark.
struct InjectDiskFill: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "disk-fill",
        abstract: "Fill the file system holding a directory, with one file removed when the fault ends.",
        discussion: """
            The agent allocates one file, .chaos-agent-fill-<uuid>, in --path (fallocate; plain writes where the \
            file system cannot preallocate). Give either --size (bytes to take) or --leave-free (bytes to leave \
            free for unprivileged writers). Refused when the result would leave less free space than the agent's \
            safety reserve ([policy] resource-reserve, 64MiB by default), for read-only file systems, and for paths \
            that do not exist or are not directories. One disk-fill per file system at a time.

            EXAMPLES
              chaos-agentctl inject disk-fill --path /var/log --leave-free 100MiB --ttl 10m
              chaos-agentctl inject disk-fill --path /var/lib/postgresql --size 5GiB --ttl 2m --wait
            """
    )
    static let kind = "disk-fill"

    @Option(help: ArgumentHelp("A directory on the file system to fill (the file goes there).", valueName: "dir"))
    var path: String
    @Option(help: ArgumentHelp("How much to allocate (e.g. 512MiB, 2GiB).", valueName: "size")) var size: String?
    @Option(help: ArgumentHelp("Fill until only this much is free (e.g. 100MiB).", valueName: "size")) var leaveFree: String?

    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard (size == nil) != (leaveFree == nil) else { throw ValidationError("give exactly one of --size and --leave-free") }
        for (flag, v) in [("--size", size), ("--leave-free", leaveFree)] {
            if let v, Units.parseSize(v) == nil { throw ValidationError("invalid \(flag) '\(v)': write a size such as 100MiB or 2GiB") }
        }
    }

    func spec() throws -> [String: JSONValue] {
        var s: [String: JSONValue] = ["path": .string(path)]
        if let size { s["size"] = .string(size) }
        if let leaveFree { s["leaveFree"] = .string(leaveFree) }
        return s
    }
}

/// Choosing a cgroup: `--cgroup PATH` or `--unit NAME`.
struct CgroupSelector: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "A cgroup v2 path, relative to the cgroup mount or absolute (/sys/fs/cgroup/...).", valueName: "path"))
    var cgroup: String?
    @Option(help: ArgumentHelp("A systemd unit; its cgroup is used (e.g. nginx.service).", valueName: "name"))
    var unit: String?

    var spec: [String: JSONValue] {
        if let cgroup { return ["cgroup": .string(cgroup)] }
        if let unit { return ["unit": .string(unit)] }
        return [:]
    }
}

/// `inject squeeze`: tighten a cgroup's limits, restore them after.
struct InjectSqueeze: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "squeeze",
        abstract: "Tighten the CPU, memory, IO or PID limits of a running service's cgroup; restore them exactly after.",
        discussion: """
            The agent reads the current cpu.max, memory.high, memory.max, io.max and pids.max it is about to change, \
            journals them, writes the fault's values, reads them back, and writes the journaled values back when \
            the fault ends (also after a crash of the agent). Two squeezes changing the same file of the same \
            cgroup are refused (409). The cgroup must have the controller enabled (for a systemd unit: \
            CPUAccounting=, MemoryAccounting=, IOAccounting=, TasksAccounting=; on by default for most).

            --cpu-max is a percentage of ONE CPU, as systemd's CPUQuota= (20% = a fifth of a CPU, 200% = two CPUs). \
            --io-max is 'DEVICE KEY=VALUE...' with DEVICE as MAJ:MIN or /dev/NAME (the whole disk) and keys \
            rbps, wbps (sizes per second) and riops, wiops.

            EXAMPLES
              chaos-agentctl inject squeeze --unit postgresql.service --cpu-max 20% --memory-high 256MiB --ttl 5m
              chaos-agentctl inject squeeze --cgroup /system.slice/app.service --pids-max 50 --ttl 1m
              chaos-agentctl inject squeeze --unit app.service --io-max '/dev/vda wbps=5MiB riops=100' --ttl 2m
            """
    )
    static let kind = "squeeze"

    @OptionGroup(title: "Target") var target: CgroupSelector
    @Option(help: ArgumentHelp("CPU bandwidth cap, percent of one CPU (cpu.max).", valueName: "percent")) var cpuMax: String?
    @Option(help: ArgumentHelp("Throttle-and-reclaim memory limit (memory.high).", valueName: "size")) var memoryHigh: String?
    @Option(help: ArgumentHelp("Hard memory limit: OOM inside the cgroup above it (memory.max).", valueName: "size"))
    var memoryMax: String?
    @Option(help: ArgumentHelp("IO limits for one device (io.max), e.g. '8:0 wbps=10MiB'.", valueName: "limits"))
    var ioMax: String?
    @Option(help: ArgumentHelp("Most processes/threads (pids.max).", valueName: "n")) var pidsMax: Int?

    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard (target.cgroup == nil) != (target.unit == nil) else {
            throw ValidationError("choose the target: exactly one of --cgroup PATH and --unit NAME")
        }
        guard cpuMax != nil || memoryHigh != nil || memoryMax != nil || ioMax != nil || pidsMax != nil else {
            throw ValidationError("say what to squeeze: --cpu-max, --memory-high, --memory-max, --io-max and/or --pids-max")
        }
        if let cpuMax, Units.parsePercent(cpuMax) == nil {
            throw ValidationError("invalid --cpu-max '\(cpuMax)': write a percentage of one CPU such as 20% or 150%")
        }
        for (flag, v) in [("--memory-high", memoryHigh), ("--memory-max", memoryMax)] {
            if let v, Units.parseSize(v) == nil { throw ValidationError("invalid \(flag) '\(v)': write a size such as 256MiB") }
        }
        if let pidsMax, pidsMax < 1 { throw ValidationError("--pids-max must be at least 1") }
    }

    func spec() throws -> [String: JSONValue] {
        var s = target.spec
        for (key, value) in [("cpuMax", cpuMax), ("memoryHigh", memoryHigh), ("memoryMax", memoryMax), ("ioMax", ioMax)] {
            if let value { s[key] = .string(value) }
        }
        if let pidsMax { s["pidsMax"] = .number(Double(pidsMax)) }
        return s
    }
}

/// `inject cpu`: take a share of the host's CPUs.
struct InjectCPU: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "cpu",
        abstract: "Burn a share of the host's CPUs, exactly, for the TTL.",
        discussion: """
            The agent starts a worker (itself, re-executed without capabilities) inside a cgroup of its own with \
            --cpus spinning threads, and caps that cgroup with cpu.max = load x cpus x 100ms per 100ms: the kernel \
            delivers exactly that CPU time however busy the host is, no more. The worker ends at the deadline, when \
            the fault is reverted, and when the agent dies.

            EXAMPLES
              chaos-agentctl inject cpu --load 60% --cpus 2 --ttl 2m
              chaos-agentctl inject cpu --load 100% --cpus 1 --ttl 30s --wait
            """
    )
    static let kind = "cpu"

    @Option(help: ArgumentHelp("Share of each CPU to take (at most 100%).", valueName: "percent")) var load: String
    @Option(help: ArgumentHelp("How many CPUs to load (default: all online).", valueName: "n")) var cpus: Int?

    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard let l = Units.parsePercent(load), l > 0 else {
            throw ValidationError("invalid --load '\(load)': write a percentage such as 60%")
        }
        if let cpus, cpus < 1 { throw ValidationError("--cpus must be at least 1") }
    }

    func spec() throws -> [String: JSONValue] {
        var s: [String: JSONValue] = ["load": .string(load)]
        if let cpus { s["cpus"] = .number(Double(cpus)) }
        return s
    }
}

/// `inject memory`: hold memory resident.
struct InjectMemory: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Hold an amount of memory resident for the TTL.",
        discussion: """
            A worker in a cgroup of its own allocates and touches pages until the cgroup's memory.current reaches \
            --size; memory.max caps the cgroup a little above it and the worker's oom_score_adj is +1000 (the \
            agent's is -900), so under pressure the kernel takes the worker, never the agent. Refused when --size \
            is more than MemAvailable minus the reserve ([policy] resource-reserve).

            EXAMPLES
              chaos-agentctl inject memory --size 2GiB --ttl 2m
              chaos-agentctl inject memory --size 512MiB --ttl 30s --wait
            """
    )
    static let kind = "memory"

    @Option(help: ArgumentHelp("How much memory to hold (e.g. 512MiB, 2GiB).", valueName: "size")) var size: String

    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if Units.parseSize(size) == nil { throw ValidationError("invalid --size '\(size)': write a size such as 2GiB") }
    }

    func spec() throws -> [String: JSONValue] { ["size": .string(size)] }
}

/// `inject io`: sustained disk pressure.
struct InjectIO: InjectKind {
    static let configuration = CommandConfiguration(
        commandName: "io",
        abstract: "Keep the disk under a directory busy at a given rate for the TTL.",
        discussion: """
            Workers in a cgroup of their own write (or read) 64 MiB files .chaos-agent-io-* under --path with \
            O_DIRECT, paced by io.max on the disk holding --path (a partition is resolved to its disk), so the rate \
            is the kernel's, not a sleep loop's. The files are removed at the end. --path must be on a block device \
            (not tmpfs, overlay or 9p). Rates: 50MB/s, 10MiB/s.

            EXAMPLES
              chaos-agentctl inject io --path /var/lib/postgresql --write-rate 50MB/s --ttl 2m
              chaos-agentctl inject io --path /srv --read-rate 20MiB/s --workers 2 --ttl 1m
            """
    )
    static let kind = "io"

    @Option(help: ArgumentHelp("A directory on the disk to stress.", valueName: "dir")) var path: String
    @Option(help: ArgumentHelp("Write at this rate (io.max wbps).", valueName: "rate")) var writeRate: String?
    @Option(help: ArgumentHelp("Read at this rate (io.max rbps).", valueName: "rate")) var readRate: String?
    @Option(help: ArgumentHelp("Worker threads (default 1).", valueName: "n")) var workers: Int?

    @OptionGroup(title: "Fault") var inject: InjectOptions
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard writeRate != nil || readRate != nil || workers != nil else {
            throw ValidationError("give --write-rate or --read-rate (or --workers N for unthrottled IO)")
        }
        for (flag, v) in [("--write-rate", writeRate), ("--read-rate", readRate)] {
            if let v, Units.parseSize(v.replacingOccurrences(of: "/s", with: "")) == nil {
                throw ValidationError("invalid \(flag) '\(v)': write a rate such as 50MB/s")
            }
        }
        if let workers, workers < 1 { throw ValidationError("--workers must be at least 1") }
    }

    func spec() throws -> [String: JSONValue] {
        var s: [String: JSONValue] = ["path": .string(path)]
        if let writeRate { s["writeRate"] = .string(writeRate) }
        if let readRate { s["readRate"] = .string(readRate) }
        if let workers { s["workers"] = .number(Double(workers)) }
        return s
    }
}
