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
