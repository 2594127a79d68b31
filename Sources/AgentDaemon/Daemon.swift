import AgentAPI
import AgentCore
import AgentServer
import CShims
import Faults
import Foundation
import Logging
import Processes
import ServiceLifecycle
import SystemdNotify
import UnixSignals

/// The agent's version, shown by `status` and `--version`.
public let agentVersion = "0.1.0"

/// Everything one running agent is made of, wired together. `chaos-agentd run` builds one and runs it; tests do too.
public final class Daemon: Sendable {
    public let config: AgentConfig
    public let engine: LeaseEngine
    public let host: HostFacts
    let logger: Logger
    let lock: StateDirLock
    /// This instance's marks on what it installs (see `AgentInstance`).
    public let instance: AgentInstance
    let startedAt = Date()
    /// The connection caps in force: `[connections]` fitted into the open-file limit set at start-up.
    public let connectionBudget: ConnectionBudget

    /// Locks the state directory, probes the host, opens the journal and builds the lease engine.
    public init(
        config: AgentConfig, logger: Logger, clock: any AgentClock = SystemClock(), role: String = "run",
        acquire: StateDirLock.Acquire = .init()
    ) throws {
        PrometheusMetrics.bootstrap()
        self.config = config
        self.logger = logger
        lock = try StateDirLock(directory: config.stateDir, role: role, acquire: acquire)
        // Before anything else opens: a high RLIMIT_NOFILE, and connection caps that leave fds for reverts.
        connectionBudget = FileLimit.prepare(config, logger: logger)
        host = HostProbe.probe()
        // Under memory pressure the OOM killer takes stress workers (+1000) long before the agent, which must live
        // to revert every fault.
        try? "-900".write(toFile: "/proc/self/oom_score_adj", atomically: false, encoding: .utf8)
        let journal = try Journal(directory: config.stateDir)
        // The marks on what this instance installs (persisted in the state dir): reconciling removes only its own.
        instance = AgentInstance.load(stateDir: config.stateDir)
        let drivers = FaultCatalog.standard(
            protectedProcesses: config.protectedProcesses, host: host, logger: logger,
            networkClassifier: config.networkClassifier,
            // The agent's own remote listener joins SSH in the default exclusions: no fault cuts the agent off.
            agentPorts: config.remote.map { [UInt16($0.listen.port)] } ?? [],
            resourceReserve: config.resourceReserve, stateDir: config.stateDir,
            allowMemoryBackedFill: config.diskFillAllowMemoryBacked, instance: instance)
        engine = LeaseEngine(
            drivers: drivers, journal: journal, policy: LeasePolicy(maxTTL: config.maxTTL), clock: clock, logger: logger)
    }

    /// Reverts whatever the journal still holds (a previous run that crashed or was killed).
    public func reconcile(accept: Bool) async -> RecoveryReport {
        let report = await engine.recover(accept: accept)
        for f in report.reverted {
            logger.notice(
                "reverted a fault left by a previous run",
                metadata: [
                    "event": "reconcile", "lease": "\(f.id)", "kind": "\(f.kind)", "owner": "\(f.owner)",
                    "outcome": "\(f.state.rawValue)", "error": "\(f.error ?? "")",
                ])
        }
        for f in report.stillPending {
            logger.error(
                "could not revert a fault left by a previous run; retrying",
                metadata: ["event": "reconcile", "lease": "\(f.id)", "kind": "\(f.kind)", "error": "\(f.error ?? "")"])
        }
        return report
    }

    /// Serves the API until SIGTERM/SIGINT, then reverts every fault. Returns the faults that could not be reverted.
    public func serve(recovered: Int, hangWatchdog: HangTimeouts? = nil) async throws -> [FaultObject] {
        let notifier = SystemdNotifier()
        let group = config.socketGroup.isEmpty ? nil : PeerAuthorizer.groupID(named: config.socketGroup)
        if group == nil && !config.socketGroup.isEmpty {
            logger.warning(
                "socket group does not exist; only root can use the socket",
                metadata: ["group": "\(config.socketGroup)", "hint": "groupadd --system \(config.socketGroup)"])
        }
        let statusInfo = StatusInfo(daemon: self, recovered: recovered)
        let router = APIRouter(engine: engine, maxBody: config.maxBody, metrics: { PrometheusMetrics.render() }) {
            await statusInfo.status()
        }
        let engine = self.engine
        let server = UnixSocketServer(
            options: .init(
                path: config.socket, mode: config.socketMode, group: group, maxBody: config.maxBody,
                maxConnections: connectionBudget.socket, perPeer: connectionBudget.perPeer,
                idle: config.connections.idleTimeout),
            router: router, logger: logger,
            onListening: {
                _ = notifier.ready(status: "serving; reconciled \(recovered) fault(s) from the journal")
            })
        let leases = LeaseService(engine: engine, notifier: notifier, logger: logger)
        let watchdog = WatchdogService(engine: engine, notifier: notifier)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: leases, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: watchdog, successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup),
        ]
        var tls: TLSServer?
        if let remote = config.remote {
            // Loaded now: a missing or bad certificate stops the agent before it serves anything.
            let server = try TLSServer(
                options: .init(
                    remote: remote, limits: ConnectionLimits(idle: config.connections.idleTimeout, maxBody: config.maxBody),
                    maxConnections: connectionBudget.remote, perPeer: connectionBudget.perPeer,
                    handshakes: connectionBudget.handshakes, handshakeTimeout: config.connections.handshakeTimeout),
                router: router,
                logger: logger)
            tls = server
            services.append(.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        // Always trapped: SIGHUP's default action would end the agent (and leave its faults to `reap`).
        services.append(.init(service: ReloadOnHangup(tls: tls, configPath: config.sourcePath, logger: logger), successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
        if let listen = config.metricsListen {
            let metrics = MetricsServer(
                listen: listen, router: router, logger: logger, maxConnections: connectionBudget.metrics,
                perPeer: connectionBudget.perPeer, idle: config.connections.idleTimeout)
            services.append(.init(service: metrics, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        let serviceGroup = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        let links = LockedValue<HangWatchdogLink?>(nil)
        if let hangWatchdog {
            links.set(
                HangWatchdogLink.start(
                    stateDir: config.stateDir, configPath: config.sourcePath, timeouts: hangWatchdog, logger: logger))
        }
        let beats = hangWatchdog.map { timeouts in
            // On the engine's own thread: a beat proves that the thread every revert runs on is alive.
            Task(executorPreference: engine.taskExecutor) { [logger, config] in
                var lastStart = ContinuousClock.now
                while !Task.isCancelled {
                    let beat = await engine.watchdogBeat()
                    if let l = links.get(),
                        !l.beat(active: beat.active, nextDeadlineIn: beat.nextDeadlineIn, leaseNow: beat.now)
                    {
                        links.set(nil)
                        logger.error("the hang watchdog is gone; starting a new one", metadata: ["event": "watchdog"])
                    }
                    if links.get() == nil, ContinuousClock.now - lastStart > .seconds(5) {
                        lastStart = ContinuousClock.now
                        links.set(
                            HangWatchdogLink.start(
                                stateDir: config.stateDir, configPath: config.sourcePath, timeouts: timeouts,
                                logger: logger))
                    }
                    // Idle (nothing active, nothing scheduled): no beats and no wake-ups until a lease exists. The
                    // watchdog then reads the journal instead, which names any fault applied since.
                    if beat.active == 0 && beat.nextDeadlineIn == nil {
                        await engine.waitUntilBusy()
                    } else {
                        try? await Task.sleep(for: timeouts.beatEvery)
                    }
                }
            }
        }
        defer { beats?.cancel() }
        try await serviceGroup.run()
        // Only a clean exit says goodbye; otherwise (faults left, an error, a crash) the watchdog reverts what the
        // journal still holds once this process is gone.
        if leases.pending.value.isEmpty { links.get()?.bye() }
        return leases.pending.value
    }
}

/// Holds every lease while the agent runs; on graceful shutdown reverts them all.
final class LeaseService: Service, Sendable {
    let engine: LeaseEngine
    let notifier: SystemdNotifier
    let logger: Logger
    let pending: Pending

    final class Pending: Sendable {
        private let box = LockedValue<[FaultObject]>([])
        var value: [FaultObject] { box.get() }
        func set(_ v: [FaultObject]) { box.set(v) }
    }

    init(engine: LeaseEngine, notifier: SystemdNotifier, logger: Logger) {
        self.engine = engine
        self.notifier = notifier
        self.logger = logger
        self.pending = Pending()
    }

    func run() async throws {
        try? await gracefulShutdown()
        _ = notifier.stopping(status: "reverting every fault")
        logger.notice("shutting down: reverting every fault", metadata: ["event": "shutdown"])
        let left = await engine.shutdown()
        pending.set(left)
        if left.isEmpty {
            logger.notice("every fault reverted", metadata: ["event": "shutdown", "outcome": "clean"])
        } else {
            logger.critical(
                "faults could not be reverted before exit; the journal keeps them for `chaos-agentd reap`",
                metadata: ["event": "shutdown", "outcome": "pending", "leases": "\(left.map(\.id).joined(separator: ","))"])
        }
    }
}

/// SIGHUP: re-read the TLS certificate, key and client CA, and `[remote.roles]` from the configuration file. Leases
/// and open connections are untouched; a bad file is logged and the old certificates and roles stay in use. Other
/// settings (listen address, paths, policy) need a restart.
struct ReloadOnHangup: Service {
    let tls: TLSServer?
    let configPath: String?
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                guard let tls else {
                    logger.notice("SIGHUP: nothing to reload (no [remote] listener)", metadata: ["event": "reload"])
                    continue
                }
                var roles: [String: Role]?
                if let configPath {
                    do {
                        guard let remote = try AgentConfig.load(path: configPath).remote else {
                            throw ConfigError("\(configPath) no longer has a [remote] section (removing it needs a restart)")
                        }
                        roles = remote.roles
                    } catch {
                        logger.error(
                            "SIGHUP: the configuration cannot be re-read; keeping the roles in use",
                            metadata: ["event": "tls-reload", "outcome": "failed", "error": "\(error)"])
                        continue
                    }
                }
                do { try tls.reload(roles: roles) } catch {
                    logger.error(
                        "TLS reload failed; keeping the certificates in use",
                        metadata: ["event": "tls-reload", "outcome": "failed", "error": "\(error)"])
                }
            }
        }
    }
}

/// Pings the systemd watchdog at half its interval, but only while the lease engine answers: a hung engine stops the
/// pings, systemd kills the agent, and ExecStopPost's `reap` reverts its faults.
struct WatchdogService: Service {
    let engine: LeaseEngine
    let notifier: SystemdNotifier

    func run() async throws {
        guard let interval = notifier.watchdogPingInterval else { return }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) } } catch { return }
            let active = await engine.ping()
            _ = notifier.watchdog()
            _ = notifier.status("serving; \(active) active fault(s)")
        }
    }
}

/// Builds `GET /v1/status`.
struct StatusInfo: Sendable {
    let daemon: Daemon
    let recovered: Int

    func status() async -> AgentStatus {
        let engine = daemon.engine
        let active = await engine.ping()
        return AgentStatus(
            version: agentVersion, pid: getpid(), startedAt: daemon.startedAt,
            uptimeSeconds: Date().timeIntervalSince(daemon.startedAt), socket: daemon.config.socket,
            stateDir: daemon.config.stateDir, maxTTL: Units.formatDuration(daemon.config.maxTTL), activeFaults: active,
            host: daemon.host, kinds: await engine.kinds(), recovered: recovered)
    }
}

/// An exclusive flock on `<state-dir>/agent.lock`, so two agents (or an agent and `reap`) never share a journal. The
/// file names its holder: `<pid> run` or `<pid> reap`.
public final class StateDirLock: Sendable {
    /// How to get the lock when someone holds it.
    public struct Acquire: Sendable {
        /// How long to wait for a holder that is leaving (a `reap`, an agent that is exiting).
        var wait: Duration = .zero
        /// Take over from a holder that is stopped (SIGSTOP) or, with `force`, from any agent: it is frozen with
        /// SIGSTOP, so it can change nothing while the journal is reverted in its place, and killed in `release`.
        var takeOver = false
        var force = false
        /// Take over only from this pid (the watchdog names the agent it watched, never a newer one).
        var expectPID: Int32?

        public init() {}
    }

    let fd: Int32
    /// The holder this process froze to take over (killed once the journal is reverted).
    let frozenHolder: Int32?

    init(directory: String, role: String = "run", acquire: Acquire = Acquire()) throws {
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        let path = directory + "/agent.lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ConfigError("cannot open \(path): \(String(cString: strerror(errno)))") }
        var frozen: Int32?
        let waitUntil = ContinuousClock.now + acquire.wait
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let holder = Self.holder(path)
            let state = holder.map { Self.processState($0.pid) } ?? nil
            if acquire.takeOver, let h = holder, acquire.expectPID == nil || acquire.expectPID == h.pid,
                h.role == "run", state == "T" || state == "t" || (acquire.force && state != nil && state != "Z")
            {
                // Freeze first: nothing the holder does can then race the revert; it dies in `release`.
                let pidfd = cshim_pidfd_open(h.pid, 0)
                if pidfd >= 0 {
                    _ = cshim_pidfd_send_signal(pidfd, SIGSTOP)
                    close(pidfd)
                }
                frozen = h.pid
                break
            }
            let leaving = holder == nil || holder?.role == "reap" || state == nil || state == "Z" || state == "X"
            if leaving && ContinuousClock.now < waitUntil {
                usleep(50_000)
                continue
            }
            close(fd)
            let who = holder.map { "pid \($0.pid)\($0.role == "reap" ? ", a reap" : "")" } ?? "pid ?"
            throw ConfigError(
                "another chaos-agentd (\(who)) owns the state directory \(directory); stop it first, or use another "
                    + "--state-dir (a running agent reverts what its journal holds by itself; `reap --take-over` "
                    + "takes over from one that is stopped)")
        }
        frozenHolder = frozen
        if frozen == nil {
            ftruncate(fd, 0)
            let line = "\(getpid()) \(role)\n"
            _ = line.withCString { pwrite(fd, $0, strlen($0), 0) }
        }
    }

    /// Kills a holder this process froze to take over, and waits until it is gone (its lock with it).
    func release() {
        guard let pid = frozenHolder else { return }
        let pidfd = cshim_pidfd_open(pid, 0)
        guard pidfd >= 0 else { return }
        defer { close(pidfd) }
        _ = cshim_pidfd_send_signal(pidfd, SIGKILL)
        var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, 5000)
    }

    static func holder(_ path: String) -> (pid: Int32, role: String)? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let first = parts.first, let pid = Int32(first), pid > 0 else { return nil }
        return (pid, parts.count > 1 ? String(parts[1]) : "run")
    }

    /// The state letter of /proc/PID/stat (R, S, D, T, t, Z, ...), nil when there is no such process.
    static func processState(_ pid: Int32) -> String? { ProcFS().process(pid).map { String($0.state) } }

    deinit { close(fd) }
}

/// A tiny lock-protected value.
final class LockedValue<T: Sendable>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func get() -> T { lock.withLock { value } }
    func set(_ v: T) { lock.withLock { value = v } }
}
