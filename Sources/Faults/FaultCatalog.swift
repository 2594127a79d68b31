import AgentAPI
import AgentCore
import Logging
import Processes

/// Every fault kind this agent knows, wired to the host.
public enum FaultCatalog {
    public static func standard(
        protectedProcesses: [String], host: HostFacts, logger: Logger, networkClassifier: String = "auto",
        agentPorts: [UInt16] = [], resourceReserve: UInt64 = 64 << 20, stateDir: String = "/run/chaos-agent",
        allowMemoryBackedFill: Bool = false, instance: AgentInstance? = nil
    ) -> [any FaultDriver] {
        let procfs = ProcFS()
        let processGuard = ProcessGuard(procfs: procfs, protectedNames: protectedProcesses)
        return [
            PauseDriver(procfs: procfs, processGuard: processGuard, host: host),
            KillDriver(procfs: procfs, processGuard: processGuard, host: host, logger: logger),
            NetworkDriver(
                host: host, logger: logger, classifier: networkClassifier, agentPorts: agentPorts,
                instance: instance ?? .derive(stateDir: stateDir)),
        ] + ["cpu", "memory", "io"].map { kind in
            StressDriver(
                kind: kind, mount: host.cgroup2Mount, controllers: host.cgroupControllers, stateDir: stateDir,
                reserve: resourceReserve, logger: logger)
        } + [
            DiskFillDriver(reserve: resourceReserve, stateDir: stateDir, allowMemoryBacked: allowMemoryBackedFill),
            SqueezeDriver(mount: host.cgroup2Mount, controllers: host.cgroupControllers),
        ]
    }
}
