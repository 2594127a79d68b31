import AgentAPI
import Foundation
import Logging

/// Policy the engine enforces on every lease.
public struct LeasePolicy: Sendable {
    public var maxTTL: Duration
    public var minTTL: Duration
    /// Ended faults stay listed this long (and at most `keepEnded` of them).
    public var keepEndedFor: Duration
    public var keepEnded: Int

    public init(
        maxTTL: Duration = .seconds(3600), minTTL: Duration = .milliseconds(100),
        keepEndedFor: Duration = .seconds(900), keepEnded: Int = 1000
    ) {
        self.maxTTL = maxTTL
        self.minTTL = minTTL
        self.keepEndedFor = keepEndedFor
        self.keepEnded = keepEnded
    }
}

/// What start-up reconciliation (or `reap`) did.
public struct RecoveryReport: Sendable {
    public var reverted: [FaultObject] = []
    /// Faults that could not be reverted yet; they stay listed as `reverting` and are retried.
    public var stillPending: [FaultObject] = []
    public var journalBadLines = 0
    public var journalBadBytes = 0
    /// Things no journal entry explained that were removed anyway (one line each).
    public var orphans: [String] = []
    public var isClean: Bool { stillPending.isEmpty }
}

/// The lease table: every fault exists only as a lease with a deadline. One actor owns all mutable lease state; a
/// single deadline-ordered scheduler (one sleeping task armed for the earliest deadline, never a poll loop and never a
/// timer per lease) reverts leases when they expire and retries failed reverts with backoff.
public actor LeaseEngine {
    private struct Lease {
        var id: String
        var kind: String
        var spec: JSONValue
        var target: JSONValue
        var plan: JSONValue
        var claims: [String]
        var owner: String
        var labels: [String: String]
        var createdAt: Date
        var expiresAt: Date
        var ttl: String
        var state: FaultState
        var error: String?
        var revertedAt: Date?
        var revertAttempts = 0
        /// Heartbeat lease: reverted unless a heartbeat (or renew) arrives within `heartbeat` of `lastBeat`.
        var heartbeat: Duration?
        var heartbeatText: String?
        var lastBeat: Date
        var revertReason: String?
        var idempotencyKey: String?

        var heartbeatDue: Date? { heartbeat.map { lastBeat.addingTimeInterval($0.seconds) } }
        /// The one deadline the scheduler keeps for this lease: TTL expiry or the heartbeat, whichever is first.
        var deadline: Date { min(expiresAt, heartbeatDue ?? expiresAt) }

        var object: FaultObject {
            FaultObject(
                id: id, kind: kind, spec: spec, target: target, state: state, createdAt: createdAt,
                expiresAt: expiresAt, revertedAt: revertedAt, owner: owner, labels: labels, error: error, ttl: ttl,
                revertAttempts: revertAttempts, heartbeat: heartbeatText,
                heartbeatDueAt: state.isFinal ? nil : heartbeatDue, revertReason: revertReason)
        }
    }

    /// What `submit` did: created a fault, or answered a retry of an `Idempotency-Key` with the fault it created.
    public struct Submission: Sendable {
        public var fault: FaultObject
        public var replayed: Bool
    }

    private let drivers: [String: any FaultDriver]
    private let journal: Journal
    private let clock: any AgentClock
    private let logger: Logger
    public nonisolated let policy: LeasePolicy

    private var leases: [String: Lease] = [:]
    private var order: [String] = []
    private var claimHolders: [String: String] = [:]
    private var queue = DeadlineQueue()
    private var timer: Task<Void, Never>?
    private var timerDeadline: Date?
    private var sustainers: [String: Task<Void, Never>] = [:]
    private var reverts: [String: Task<FaultObject, Never>] = [:]
    private var accepting = false
    private var eventSeq: UInt64 = 0
    private var eventBuffer: [FaultEvent] = []
    private var subscribers: [UUID: AsyncStream<FaultEvent>.Continuation] = [:]
    private static let eventBufferSize = 1024
    private var idempotencyKeys: [String: IdempotencyEntry] = [:]
    /// Per kind, bumped whenever that kind's set of live plans changes (so a prepare that read them can tell).
    private var generations: [String: UInt64] = [:]
    private var busyWaiters: [CheckedContinuation<Void, Never>] = []
    /// The engine's own thread (see `EngineThread`): the actor runs there, and so does every revert.
    private nonisolated let thread: EngineThread
    /// Where drivers resolve specs: off the engine's thread and off the cooperative pool.
    private nonisolated let prepareWorkers: BlockingPool
    /// Writes the records of finished reverts, in order, off the engine's thread.
    private nonisolated let journalWriter: BlockingPool
    public nonisolated var unownedExecutor: UnownedSerialExecutor { thread.asUnownedSerialExecutor() }

    public init(
        drivers: [any FaultDriver], journal: Journal, policy: LeasePolicy, clock: any AgentClock = SystemClock(),
        logger: Logger = Logger(label: "chaos-agent.leases")
    ) {
        var byKind: [String: any FaultDriver] = [:]
        for d in drivers { byKind[d.kind] = d }
        self.drivers = byKind
        self.journal = journal
        self.policy = policy
        self.clock = clock
        self.logger = logger
        self.thread = EngineThread()
        self.prepareWorkers = BlockingPool(name: "chaos-agent.prepare", threads: 2)
        self.journalWriter = BlockingPool(name: "chaos-agent.journal", threads: 1)
    }

    /// Whether the caller runs on the engine's own thread (tests prove where reverts run with it).
    public nonisolated var runsOnEngineThread: Bool { thread.isCurrent }

    // MARK: - Start-up and shutdown

    /// Reads the journal and reverts every lease not marked reverted, then starts accepting requests.
    /// Leases whose revert fails stay listed as `reverting` and are retried with backoff.
    public func recover(accept: Bool = true) async -> RecoveryReport {
        var report = RecoveryReport()
        let replay: JournalReplay
        do {
            replay = try journal.replay()
        } catch {
            logger.critical("journal unreadable", metadata: ["error": "\(error)", "path": "\(journal.path)"])
            replay = JournalReplay(leases: [], goodRecords: 0, badLines: 0, badBytes: 0, orphanRecords: 0)
        }
        report.journalBadLines = replay.badLines
        report.journalBadBytes = replay.badBytes
        if replay.badLines > 0 {
            logger.error(
                "journal had torn or corrupt lines; kept every good record",
                metadata: [
                    "event": "journal-repair", "badLines": "\(replay.badLines)", "badBytes": "\(replay.badBytes)",
                    "goodRecords": "\(replay.goodRecords)",
                ])
        }
        for k in replay.keys { idempotencyKeys[k.key] = k }
        for j in replay.unreverted {
            insert(
                Lease(
                    id: j.id, kind: j.kind, spec: j.spec, target: j.target, plan: j.plan, claims: j.claims,
                    owner: j.owner, labels: j.labels, createdAt: j.createdAt, expiresAt: j.expiresAt, ttl: j.ttl,
                    state: .reverting, error: nil, heartbeatText: j.heartbeat, lastBeat: j.createdAt,
                    idempotencyKey: j.idempotencyKey))
            var outcome = await performRevert(j.id, reason: "recovered")
            // A couple of quick retries before giving up on a clean start; the scheduler keeps retrying after.
            for delay in [0.05, 0.2] where outcome.state != .reverted {
                try? await Task.sleep(for: .seconds(delay))
                outcome = await performRevert(j.id, reason: "recovered")
            }
            // [g-store] a lease ended as `failed` (its revert can never succeed; nothing of it remains) is not pending.
            if outcome.state.isFinal { report.reverted.append(outcome) } else { report.stillPending.append(outcome) }
        }
        let livePlans = leases.values.filter { !$0.state.isFinal }.map(\.plan)
        for kind in drivers.keys.sorted() {
            for line in await drivers[kind]!.reconcileOrphans(livePlans: livePlans) {
                report.orphans.append(line)
                logger.warning(
                    "removed something of ours that no journal entry explains",
                    metadata: ["event": "reconcile-orphan", "kind": "\(kind)", "what": "\(line)"])
            }
        }
        await flushJournal()
        do { try journal.compact() } catch { logger.error("journal compaction failed", metadata: ["error": "\(error)"]) }
        // Every kind's gauge exists from the start (at 0), so dashboards show "none" rather than "no data".
        for kind in drivers.keys { updateActiveGauge(kind) }
        accepting = accept
        rearm()
        return report
    }

    /// Stops accepting new faults and reverts every fault. Returns those that could not be reverted.
    public func shutdown(retryFor: Duration = .seconds(10)) async -> [FaultObject] {
        accepting = false
        _ = await revertAll(reason: "shutdown")
        let start = ContinuousClock.now
        var delay = 0.1
        while ContinuousClock.now - start < retryFor {
            let pending = leases.values.filter { !$0.state.isFinal }.map(\.id)
            if pending.isEmpty { break }
            try? await Task.sleep(for: .seconds(delay))
            for id in pending { _ = await startRevert(id, reason: "shutdown").value }
            delay = min(delay * 2, 2)
        }
        timer?.cancel()
        timer = nil
        await flushJournal()
        for c in subscribers.values { c.finish() }
        subscribers.removeAll()
        return leases.values.filter { !$0.state.isFinal }.map(\.object)
    }

    public var isAccepting: Bool { accepting }

    /// Answers while the actor is responsive; the systemd watchdog ping depends on it.
    public func ping() -> Int { leases.values.filter { !$0.state.isFinal }.count }

    /// What the hang watchdog needs from a beat: faults not over yet, and the seconds until the scheduler's next
    /// deadline (nil when none is armed).
    public func watchdogBeat() -> (active: Int, nextDeadlineIn: Double?, now: Date) {
        let now = clock.now()
        return (ping(), queue.peek().map { $0.deadline.timeIntervalSince(now) }, now)
    }

    /// Returns once a lease exists (at once when one does): the watchdog beat sleeps here while the agent is idle, so
    /// an idle agent makes no wake-ups of its own.
    public func waitUntilBusy() async {
        if leases.values.contains(where: { !$0.state.isFinal }) || queue.peek() != nil { return }
        await withCheckedContinuation { busyWaiters.append($0) }
    }

    /// The engine's thread as a task executor: work that must prove the engine itself is alive (the watchdog beat)
    /// runs there.
    public nonisolated var taskExecutor: any TaskExecutor { thread }

    // MARK: - API operations

    public func kinds() -> [KindAvailability] {
        drivers.keys.sorted().map { drivers[$0]!.availability() }
    }

    public func create(_ request: FaultRequest, context: FaultContext) async throws -> FaultObject {
        try await submit(request, context: context).fault
    }

    /// What `admit` hands to the prepare step: the driver, the context it resolves against, and enough to tell at
    /// commit time whether that context went stale.
    private struct Ticket: Sendable {
        var driver: any FaultDriver
        var context: FaultContext
        var ttl: Duration
        var heartbeat: Duration?
        var labels: [String: String]
        var requestHash: String?
        var generation: UInt64
        var started: ContinuousClock.Instant
    }

    private enum Admission: Sendable {
        case replay(Submission)
        case prepare(Ticket)
    }

    /// Creates a fault; with an `Idempotency-Key`, a retry of the same request returns the fault the first one
    /// created (`replayed`), and the same key with a different request is refused (422).
    ///
    /// Three steps, so that nothing a client controls runs on the engine's thread: `admit` (on the engine: checks and
    /// a snapshot of what the driver needs), the driver's `prepare` (on the prepare pool: it may scan /proc and match
    /// patterns), `commit` (on the engine: claims, journal, apply). When a driver that builds on sibling faults'
    /// plans finds them changed at commit, it prepares again.
    public nonisolated func submit(
        _ request: FaultRequest, context: FaultContext, idempotencyKey: String? = nil
    ) async throws -> Submission {
        for _ in 0..<4 {
            switch try await admit(request, context: context, idempotencyKey: idempotencyKey) {
            case .replay(let submission): return submission
            case .prepare(let ticket):
                let driver = ticket.driver
                let spec = request.spec
                let driverContext = ticket.context
                let prepared = try await prepareWorkers.run { try driver.prepare(spec: spec, context: driverContext) }
                if let done = try await commit(request, ticket: ticket, prepared: prepared, idempotencyKey: idempotencyKey) {
                    return done
                }
            }
        }
        throw AgentError.notReady(
            "other \(request.kind) faults kept changing while this one was being prepared; try again")
    }

    /// The idempotency answer for `key`, if the key is known: a replay, or a refusal when it named another request.
    private func replayed(key: String, hash: String) throws -> Submission? {
        guard let known = idempotencyKeys[key] else { return nil }
        guard known.requestHash == hash else {
            throw AgentError(
                status: 422, code: "idempotency-key-reused",
                message: "Idempotency-Key '\(key)' was used for a different request (fault \(known.faultID)); "
                    + "use a new key for a new fault", field: "Idempotency-Key")
        }
        EngineMetrics.idempotentReplay()
        guard let lease = leases[known.faultID] else {
            throw AgentError.conflict(
                "Idempotency-Key '\(key)' already created fault \(known.faultID), which has ended and is no longer "
                    + "listed; nothing was injected again")
        }
        return Submission(fault: lease.object, replayed: true)
    }

    private func admit(
        _ request: FaultRequest, context: FaultContext, idempotencyKey: String?
    ) throws -> Admission {
        guard accepting else { throw AgentError.notReady("the agent is not accepting faults (starting up or shutting down)") }
        let started = ContinuousClock.now
        var requestHash: String?
        if let key = idempotencyKey {
            try Self.validate(idempotencyKey: key)
            let hash = Self.digest(request)
            requestHash = hash
            if let replay = try replayed(key: key, hash: hash) { return .replay(replay) }
        }
        guard !request.kind.isEmpty else { throw AgentError.badRequest("kind is empty", field: "kind") }
        guard let driver = drivers[request.kind] else {
            throw AgentError.badRequest(
                "unknown fault kind '\(request.kind)'; known kinds: \(drivers.keys.sorted().joined(separator: ", "))",
                field: "kind")
        }
        let availability = driver.availability()
        guard availability.available else {
            throw AgentError.unsupported(
                "fault kind '\(request.kind)' cannot work on this host: \(availability.reason ?? "unavailable")")
        }
        let ttl = try parseTTL(request.ttl)
        let heartbeat = try request.heartbeat.map { try parseHeartbeat($0, ttl: ttl) }
        let labels = request.labels ?? [:]
        try validate(labels: labels)
        guard case .object = request.spec else { throw AgentError.badRequest("spec must be a JSON object", field: "spec") }

        var context = context
        context.heldClaims = claimHolders
        if driver.preparesFromLivePlans {
            context.livePlans = Dictionary(
                uniqueKeysWithValues: leases.values.filter { $0.kind == request.kind && !$0.state.isFinal }.map {
                    ($0.id, $0.plan)
                })
        }
        context.ttl = ttl
        return .prepare(
            Ticket(
                driver: driver, context: context, ttl: ttl, heartbeat: heartbeat, labels: labels,
                requestHash: requestHash, generation: generations[request.kind, default: 0], started: started))
    }

    /// Journals and applies a prepared fault. Nil when the driver's view of sibling plans went stale (prepare again).
    private func commit(
        _ request: FaultRequest, ticket: Ticket, prepared: PreparedFault, idempotencyKey: String?
    ) async throws -> Submission? {
        guard accepting else { throw AgentError.notReady("the agent is not accepting faults (starting up or shutting down)") }
        if let key = idempotencyKey, let hash = ticket.requestHash, let replay = try replayed(key: key, hash: hash) {
            return replay
        }
        if ticket.driver.preparesFromLivePlans, generations[request.kind, default: 0] != ticket.generation { return nil }
        let driver = ticket.driver
        let ttl = ticket.ttl
        let heartbeat = ticket.heartbeat
        let labels = ticket.labels
        let requestHash = ticket.requestHash
        let started = ticket.started
        let preparedAt = ContinuousClock.now
        for claim in prepared.claims {
            if let holder = claimHolders[claim] {
                throw AgentError.conflict(
                    "\(describe(claim: claim)) is already held by fault \(holder); revert it first or wait for it to end")
            }
        }

        let context = ticket.context
        let id = Self.newID()
        let now = clock.now()
        var lease = Lease(
            id: id, kind: request.kind, spec: request.spec, target: prepared.target, plan: prepared.plan,
            claims: prepared.claims, owner: context.owner, labels: labels, createdAt: now,
            expiresAt: now.addingTimeInterval(ttl.seconds), ttl: request.ttl, state: .applying, error: nil,
            heartbeat: heartbeat, heartbeatText: heartbeat == nil ? nil : request.heartbeat, lastBeat: now,
            idempotencyKey: idempotencyKey)

        var intent = JournalRecord(type: .intent, id: id, at: now)
        intent.kind = lease.kind
        intent.spec = lease.spec
        intent.target = lease.target
        intent.plan = lease.plan
        intent.claims = lease.claims
        intent.owner = lease.owner
        intent.labels = labels
        intent.createdAt = now
        intent.expiresAt = lease.expiresAt
        intent.ttl = lease.ttl
        intent.state = .applying
        intent.heartbeat = lease.heartbeatText
        intent.idempotencyKey = idempotencyKey
        intent.requestHash = requestHash
        do {
            try journal.append(intent)
        } catch {
            logger.error("journal write failed; fault not applied", metadata: ["error": "\(error)"])
            // [g-store] a journal that cannot be written refuses new faults with 507 (was 500).
            throw AgentError.stateNotWritable(
                "state dir not writable: \(error); the fault was not applied (reverts go on)")
        }
        insert(lease)
        if let key = idempotencyKey, let hash = requestHash {
            idempotencyKeys[key] = IdempotencyEntry(key: key, faultID: id, requestHash: hash, at: now)
        }
        let journaledAt = ContinuousClock.now

        do {
            if let updated = try await driver.apply(plan: lease.plan) {
                lease = leases[id] ?? lease
                lease.plan = updated.plan
                lease.target = updated.target
                leases[id] = lease
                generations[lease.kind, default: 0] &+= 1
                var r = JournalRecord(type: .plan, id: id, at: clock.now())
                r.plan = updated.plan
                r.target = updated.target
                journalBestEffort(r)
            }
        } catch {
            let reason = (error as? AgentError)?.message ?? "\(error)"
            lease = leases[id] ?? lease
            lease.error = reason
            leases[id] = lease
            if let key = idempotencyKey {
                // Nothing took effect: a retry with the same key may try again.
                idempotencyKeys.removeValue(forKey: key)
                journal.forgetKey(key)
            }
            EngineMetrics.applyFailed(kind: lease.kind, code: (error as? AgentError)?.code ?? "apply-failed")
            let rolledBack = await performRevert(id, reason: "apply-failed", finalState: .failed, failure: reason)
            logger.warning(
                "apply failed",
                metadata: [
                    "event": "apply", "lease": "\(id)", "kind": "\(lease.kind)", "owner": "\(lease.owner)",
                    "outcome": "failed", "error": "\(reason)", "rollback": "\(rolledBack.state.rawValue)",
                ])
            if var agentError = error as? AgentError {
                if rolledBack.state != .failed { agentError.message += " (rollback still pending: \(rolledBack.error ?? ""))" }
                throw agentError
            }
            throw AgentError.failed(
                "the fault could not be applied: \(reason)"
                    + (rolledBack.state == .failed ? "" : "; rolling back is still being retried"))
        }

        let appliedAt = ContinuousClock.now
        lease = leases[id] ?? lease
        lease.state = .active
        // The first heartbeat interval starts when the fault is in place, not when the request arrived.
        lease.lastBeat = max(lease.lastBeat, clock.now())
        leases[id] = lease
        // No journal record for "active": recovery reverts every lease that is not reverted or failed, whether it
        // was still applying or active, so the intent alone is enough and an apply costs one fdatasync.
        queue.schedule(id, at: lease.deadline)
        rearm()
        let plan = lease.plan
        sustainers[id] = Task { await driver.sustain(plan: plan) }
        emit(.applied, lease.object)
        let applyDuration = ContinuousClock.now - started
        EngineMetrics.applied(kind: lease.kind, duration: applyDuration)
        logger.info(
            "fault applied",
            metadata: [
                "event": "apply", "lease": "\(id)", "kind": "\(lease.kind)", "owner": "\(lease.owner)",
                "outcome": "active", "ttl": "\(lease.ttl)", "expiresAt": "\(RFC3339.format(lease.expiresAt))",
                "target": "\(Self.compactJSON(lease.target))",
                "applyMs": "\(Self.ms(applyDuration))",
                // Where the time went: resolving the spec, the journal's fdatasync, the kernel work and its check.
                "prepareMs": "\(Self.ms(preparedAt - started))", "journalMs": "\(Self.ms(journaledAt - preparedAt))",
                "kernelMs": "\(Self.ms(appliedAt - journaledAt))",
                "heartbeat": "\(lease.heartbeatText ?? "-")",
            ])
        prune()
        return Submission(fault: lease.object, replayed: false)
    }

    public func list() -> [FaultObject] {
        prune()
        return order.compactMap { leases[$0]?.object }
    }

    public func get(_ id: String) throws -> FaultObject {
        guard let lease = leases[id] else { throw AgentError.notFound("no fault with id '\(id)'") }
        return lease.object
    }

    public func renew(_ id: String, ttl ttlText: String, owner: String) throws -> FaultObject {
        guard var lease = leases[id] else { throw AgentError.notFound("no fault with id '\(id)'") }
        guard lease.state == .active else {
            throw AgentError.conflict("fault \(id) is \(lease.state.rawValue), only an active fault can be renewed")
        }
        let ttl = try parseTTL(ttlText)
        let now = clock.now()
        lease.expiresAt = now.addingTimeInterval(ttl.seconds)
        lease.ttl = ttlText
        lease.lastBeat = now
        // Helpers with their own deadline (stress workers) learn the new one before the renew counts.
        try drivers[lease.kind]?.extend(plan: lease.plan, until: lease.expiresAt)
        var r = JournalRecord(type: .renew, id: id, at: now)
        r.expiresAt = lease.expiresAt
        r.ttl = ttlText
        try appendOrFail(r)
        leases[id] = lease
        queue.schedule(id, at: lease.deadline)
        rearm()
        emit(.renewed, lease.object)
        logger.info(
            "fault renewed",
            metadata: [
                "event": "renew", "lease": "\(id)", "kind": "\(lease.kind)", "owner": "\(owner)", "outcome": "active",
                "ttl": "\(ttlText)", "expiresAt": "\(RFC3339.format(lease.expiresAt))",
            ])
        return lease.object
    }

    /// A heartbeat: the fault lives another heartbeat interval (never past its TTL). Cheap: no journal write (a
    /// restart reverts every fault anyway), no event.
    public func heartbeat(_ id: String) throws -> FaultObject {
        guard var lease = leases[id] else { throw AgentError.notFound("no fault with id '\(id)'") }
        guard let interval = lease.heartbeatText else {
            throw AgentError.conflict("fault \(id) has no heartbeat; create it with \"heartbeat\" or renew its ttl instead")
        }
        guard lease.state == .active || lease.state == .applying else {
            throw AgentError.conflict("fault \(id) is \(lease.state.rawValue); a heartbeat keeps only a live fault alive")
        }
        lease.lastBeat = clock.now()
        leases[id] = lease
        if lease.state == .active {
            queue.schedule(id, at: lease.deadline)
            rearm()
        }
        logger.debug("heartbeat", metadata: ["event": "heartbeat", "lease": "\(id)", "interval": "\(interval)"])
        return lease.object
    }

    /// Reverts one fault now. Idempotent: an ended fault is returned as it is.
    public func revert(_ id: String, by owner: String) async throws -> FaultObject {
        guard let lease = leases[id] else { throw AgentError.notFound("no fault with id '\(id)'") }
        if lease.state.isFinal { return lease.object }
        if lease.state == .applying {
            throw AgentError.conflict("fault \(id) is still being applied; try again in a moment")
        }
        return await startRevert(id, reason: "revoked by \(owner)").value
    }

    /// Reverts every fault that is not over yet.
    public func revertAll(reason: String) async -> [FaultObject] {
        let ids = order.filter { id in leases[id].map { $0.state == .active || $0.state == .reverting } ?? false }
        let tasks = ids.map { startRevert($0, reason: reason) }
        var out: [FaultObject] = []
        for t in tasks { out.append(await t.value) }
        return out
    }

    /// Lifecycle events after `seq` (buffered ones first), then live ones until the stream is dropped.
    public func events(after seq: UInt64?) -> AsyncStream<FaultEvent> {
        let (stream, continuation) = AsyncStream<FaultEvent>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        if let seq {
            for e in eventBuffer where e.seq > seq { continuation.yield(e) }
        }
        let key = UUID()
        subscribers[key] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(key) }
        }
        return stream
    }

    // MARK: - Scheduler (test hooks are internal-visible through these two)

    /// The deadline the single scheduler task is armed for, if any.
    public var armedDeadline: Date? { timerDeadline }

    /// Reverts every lease whose deadline has passed (and retries due failed reverts). The scheduler calls this when
    /// it wakes; tests with a manual clock call it directly.
    public func fireDue() async {
        timer = nil
        timerDeadline = nil
        let due = queue.popDue(now: clock.now())
        for id in due {
            guard let lease = leases[id] else { continue }
            switch lease.state {
            case .active:
                let now = clock.now()
                if let due = lease.heartbeatDue, due <= now, due < lease.expiresAt {
                    missedHeartbeat(lease)
                } else if lease.expiresAt <= now {
                    _ = startRevert(id, reason: "expired")
                } else {
                    queue.schedule(id, at: lease.deadline)
                }
            case .reverting: _ = startRevert(id, reason: "retry")
            default: break
            }
        }
        rearm()
    }

    /// Waits until every revert now in flight has finished (tests and shutdown use it).
    public func settle() async {
        while let t = reverts.values.first { _ = await t.value }
        await flushJournal()
    }

    private func rearm() {
        guard let next = queue.peek() else {
            timer?.cancel()
            timer = nil
            timerDeadline = nil
            return
        }
        if timer != nil, timerDeadline == next.deadline { return }
        timer?.cancel()
        timerDeadline = next.deadline
        let clock = self.clock
        let deadline = next.deadline
        timer = Task(executorPreference: thread) { [weak self] in
            do { try await clock.sleep(until: deadline) } catch { return }
            await self?.fireDue()
        }
    }

    // MARK: - Revert

    private func missedHeartbeat(_ lease: Lease) {
        EngineMetrics.heartbeatMissed(kind: lease.kind)
        emit(.heartbeatMissed, lease.object)
        logger.warning(
            "heartbeat missed; reverting",
            metadata: [
                "event": "heartbeat-missed", "lease": "\(lease.id)", "kind": "\(lease.kind)", "owner": "\(lease.owner)",
                "heartbeat": "\(lease.heartbeatText ?? "-")", "lastBeat": "\(RFC3339.format(lease.lastBeat))",
            ])
        _ = startRevert(lease.id, reason: "heartbeat-missed")
    }

    private func startRevert(_ id: String, reason: String) -> Task<FaultObject, Never> {
        if let t = reverts[id] { return t }
        // Preferring the engine's thread as task executor makes the driver's (nonisolated) revert run there too.
        let t = Task(executorPreference: thread) { await self.performRevert(id, reason: reason) }
        reverts[id] = t
        return t
    }

    /// Reverts a lease through its driver. On failure the lease stays `reverting` and a retry is scheduled with
    /// backoff (50 ms doubling to 1 s): a fault is never dropped while any of it may remain.
    private func performRevert(
        _ id: String, reason: String, finalState: FaultState = .reverted, failure: String? = nil
    ) async -> FaultObject {
        defer { reverts[id] = nil }
        var finalState = finalState, failure = failure  // [g-store] a permanent revert failure ends the lease as failed
        guard var lease = leases[id] else {
            return FaultObject(
                id: id, kind: "", spec: .null, target: .null, state: .reverted, createdAt: clock.now(),
                expiresAt: clock.now(), revertedAt: nil, owner: "", labels: [:], error: nil, ttl: "")
        }
        if lease.state.isFinal { return lease.object }
        sustainers.removeValue(forKey: id)?.cancel()
        queue.remove(id)
        rearm()
        if lease.state != .reverting {
            // Not journaled: to recovery, "reverting" and "active" mean the same (revert it).
            lease.state = .reverting
        }
        // The first reason sticks: a revert that had to be retried still ended because it expired (or was revoked).
        if lease.revertReason == nil && reason != "retry" { lease.revertReason = reason }
        leases[id] = lease
        let started = ContinuousClock.now
        do {
            guard let driver = drivers[lease.kind] else {
                throw AgentError.failed("this agent has no driver for kind '\(lease.kind)' to revert it with")
            }
            // [g-store] begin: a revert that can never succeed ends the lease as `failed` (loudly) instead of looping.
            do {
                try await driver.revert(plan: lease.plan)
            } catch let error where error is PermanentRevertFailure || error is DecodingError {
                var why = "\(error)"
                if error is DecodingError {
                    // This version cannot read the plan: sweep what carries our marks and no other lease explains.
                    // (The journal's live leases too: during recovery the later ones are not in the table yet.)
                    let others = leases.values.filter { $0.id != id && !$0.state.isFinal }.map(\.plan)
                        + journal.liveLeases.filter { $0.id != id && leases[$0.id] == nil }.map(\.plan)
                    let swept = await driver.reconcileOrphans(livePlans: others)
                    why = "this agent cannot read the fault's revert plan (\(error)); removed what no other lease "
                        + "explains: \(swept.isEmpty ? "nothing" : swept.joined(separator: "; "))"
                }
                finalState = .failed
                failure = "revert impossible, ended as failed: \(why)"
                logger.critical(
                    "revert can never succeed; the lease ends as failed",
                    metadata: ["event": "revert", "lease": "\(id)", "kind": "\(lease.kind)", "error": "\(why)"])
            }
            // [g-store] end
        } catch {
            lease = leases[id] ?? lease
            lease.revertAttempts += 1
            lease.error = "revert failed (attempt \(lease.revertAttempts)): \((error as? AgentError)?.message ?? "\(error)")"
            leases[id] = lease
            EngineMetrics.revertFailed(kind: lease.kind)
            // Fast and flat: most revert failures are transient (EMFILE under a connection flood, EBUSY, EAGAIN), and a
            // fault must not stay for tens of seconds after the cause went. 50 ms doubling to at most 1 s.
            let backoff = min(0.05 * pow(2, Double(min(lease.revertAttempts - 1, 10))), 1)
            queue.schedule(id, at: clock.now().addingTimeInterval(backoff))
            rearm()
            emit(.revertFailed, lease.object)
            logger.error(
                "revert failed; retrying",
                metadata: [
                    "event": "revert", "lease": "\(id)", "kind": "\(lease.kind)", "owner": "\(lease.owner)",
                    "outcome": "retrying", "reason": "\(reason)", "attempt": "\(lease.revertAttempts)",
                    "retryIn": "\(backoff)s", "error": "\(lease.error ?? "")",
                ])
            return lease.object
        }
        lease = leases[id] ?? lease
        let now = clock.now()
        lease.state = finalState
        generations[lease.kind, default: 0] &+= 1
        lease.revertedAt = now
        lease.error = failure
        if lease.revertReason == nil { lease.revertReason = reason }
        leases[id] = lease
        updateActiveGauge(lease.kind)
        for c in lease.claims where claimHolders[c] == id { claimHolders.removeValue(forKey: c) }
        var r = JournalRecord(type: .state, id: id, at: now)
        r.state = finalState
        r.error = failure
        // Off the engine's thread: the fault is already gone, and a slow fdatasync must not delay the next revert. If
        // the agent dies before the record is on disk, recovery reverts the lease once more, which is idempotent.
        journalInBackground(r)
        if finalState == .reverted {
            emit(.reverted, lease.object)
            EngineMetrics.reverted(kind: lease.kind, reason: lease.revertReason ?? reason)
            let deadlineMissed: Date? =
                switch lease.revertReason ?? reason {
                case "expired": lease.expiresAt
                case "heartbeat-missed": lease.heartbeatDue
                default: nil
                }
            let lagMs = deadlineMissed.map { now.timeIntervalSince($0) * 1000 }
            if let lagMs { EngineMetrics.revertLag(kind: lease.kind, seconds: lagMs / 1000) }
            logger.info(
                "fault reverted",
                metadata: [
                    "event": "revert", "lease": "\(id)", "kind": "\(lease.kind)", "owner": "\(lease.owner)",
                    "outcome": "reverted", "reason": "\(reason)",
                    "lagMs": "\(lagMs.map { String(format: "%.3f", $0) } ?? "-")",
                    "revertMs": "\(Self.ms(ContinuousClock.now - started))",
                ])
        } else {
            emit(.failed, lease.object)
        }
        return lease.object
    }

    // MARK: - Helpers

    static func ms(_ d: Duration) -> String { String(format: "%.3f", d.seconds * 1000) }

    private func insert(_ lease: Lease) {
        generations[lease.kind, default: 0] &+= 1
        if !busyWaiters.isEmpty {
            busyWaiters.forEach { $0.resume() }
            busyWaiters.removeAll()
        }
        if leases[lease.id] == nil { order.append(lease.id) }
        leases[lease.id] = lease
        for c in lease.claims { claimHolders[c] = lease.id }
        updateActiveGauge(lease.kind)
    }

    /// Faults of `kind` that are (or may still be) on the host.
    private func updateActiveGauge(_ kind: String) {
        EngineMetrics.activeFaults(kind: kind, count: leases.values.filter { $0.kind == kind && !$0.state.isFinal }.count)
    }

    private func parseHeartbeat(_ text: String, ttl: Duration) throws -> Duration {
        guard let d = Units.parseDuration(text) else {
            throw AgentError.badRequest(
                "heartbeat '\(text)' is not a duration; use a number with a unit, like \"10s\"", field: "heartbeat")
        }
        guard d >= .milliseconds(200) else {
            throw AgentError.badRequest("heartbeat \(text) is shorter than the minimum 200ms", field: "heartbeat")
        }
        guard d <= ttl else {
            throw AgentError.badRequest(
                "heartbeat \(text) is longer than the ttl \(Units.formatDuration(ttl)); it would never matter",
                field: "heartbeat")
        }
        return d
    }

    static func validate(idempotencyKey key: String) throws {
        guard !key.isEmpty, key.utf8.count <= 255, key.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else {
            throw AgentError.badRequest(
                "Idempotency-Key must be 1-255 visible ASCII characters (a UUID is typical)", field: "Idempotency-Key")
        }
    }

    /// FNV-1a (64-bit) of the request's canonical JSON (sorted keys): the same request in any key order or spacing
    /// has the same digest.
    static func digest(_ request: FaultRequest) -> String {
        let data = (try? WireCoding.encoder().encode(request)) ?? Data()
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in data {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return String(format: "fnv1a64:%016llx:%d", h, data.count)
    }

    private func parseTTL(_ text: String) throws -> Duration {
        guard !text.isEmpty else { throw AgentError.badRequest("ttl is required (for example \"30s\")", field: "ttl") }
        guard let ttl = Units.parseDuration(text) else {
            throw AgentError.badRequest(
                "ttl '\(text)' is not a duration; use a number with a unit: 250ms, 30s, 5m, 1h", field: "ttl")
        }
        guard ttl >= policy.minTTL else {
            throw AgentError.badRequest(
                "ttl \(text) is shorter than the minimum \(Units.formatDuration(policy.minTTL))", field: "ttl")
        }
        guard ttl <= policy.maxTTL else {
            throw AgentError.refused(
                "ttl \(text) is over this agent's cap of \(Units.formatDuration(policy.maxTTL)) ([policy] max-ttl); "
                    + "use a shorter ttl and renew it", field: "ttl")
        }
        return ttl
    }

    private func validate(labels: [String: String]) throws {
        guard labels.count <= 64 else { throw AgentError.badRequest("at most 64 labels", field: "labels") }
        for (k, v) in labels {
            guard !k.isEmpty, k.count <= 128, v.count <= 1024 else {
                throw AgentError.badRequest("label keys must be 1-128 characters and values at most 1024", field: "labels")
            }
        }
    }

    private func describe(claim: String) -> String {
        let parts = claim.split(separator: ":")
        if parts.first == "process", parts.count >= 2 { return "process \(parts[1])" }
        return claim
    }

    private func appendOrFail(_ r: JournalRecord) throws {
        // [g-store] an unwritable journal is 507 state-not-writable (was 500), as for new faults.
        do { try journal.append(r) } catch { throw AgentError.stateNotWritable("state dir not writable: \(error)") }
    }

    /// Appends `r` on the journal's own thread, in order with other background records; best effort like
    /// `journalBestEffort`. `flushJournal` waits until every such record is written.
    private func journalInBackground(_ r: JournalRecord) {
        let journal = self.journal
        let logger = self.logger
        journalWriter.submit {
            do { try journal.append(r) } catch {
                logger.error("journal write failed", metadata: ["error": "\(error)", "lease": "\(r.id)"])
            }
        }
    }

    /// Waits until every record appended in the background is written.
    public func flushJournal() async { await journalWriter.run {} }

    private func journalBestEffort(_ r: JournalRecord) {
        do { try journal.append(r) } catch {
            logger.error("journal write failed", metadata: ["error": "\(error)", "lease": "\(r.id)"])
        }
    }

    private func emit(_ type: FaultEvent.EventType, _ fault: FaultObject) {
        eventSeq += 1
        let e = FaultEvent(seq: eventSeq, type: type, at: clock.now(), fault: fault)
        eventBuffer.append(e)
        if eventBuffer.count > Self.eventBufferSize { eventBuffer.removeFirst(eventBuffer.count - Self.eventBufferSize) }
        for c in subscribers.values { c.yield(e) }
    }

    private func unsubscribe(_ key: UUID) { subscribers.removeValue(forKey: key) }

    /// Forgets ended faults older than the retention window, keeping the newest `keepEnded`.
    private func prune() {
        let cutoff = clock.now().addingTimeInterval(-policy.keepEndedFor.seconds)
        var endedKept = 0
        var drop: Set<String> = []
        for id in order.reversed() {
            guard let l = leases[id], l.state.isFinal else { continue }
            endedKept += 1
            if endedKept > policy.keepEnded || (l.revertedAt ?? l.createdAt) < cutoff { drop.insert(id) }
        }
        guard !drop.isEmpty else { return }
        for id in drop { leases.removeValue(forKey: id) }
        order.removeAll { drop.contains($0) }
    }

    static func newID() -> String {
        var g = SystemRandomNumberGenerator()
        return "f-" + String(format: "%012llx", g.next() & 0xFFFF_FFFF_FFFF)
    }

    static func compactJSON(_ v: JSONValue) -> String {
        (try? String(decoding: WireCoding.encoder().encode(v), as: UTF8.self)) ?? "?"
    }
}
