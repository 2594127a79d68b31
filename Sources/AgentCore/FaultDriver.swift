import Foundation
import AgentAPI

/// Who is asking for a fault.
public struct FaultContext: Sendable {
    /// `unix:root`, `unix:alice`, later a certificate identity.
    public var owner: String
    /// The caller's process (SO_PEERCRED), so selectors never match the caller or its ancestors.
    public var callerPID: Int32?
    /// Claims held by active faults (claim -> fault id), filled in by the engine before `prepare`, so a driver can
    /// tell "already done by another fault" (409) from other refusals.
    public var heldClaims: [String: String]
    /// Plans of this kind's faults that are not over yet (fault id -> plan), filled in by the engine before
    /// `prepare`, so a driver can share host objects between faults (several network faults on one interface).
    public var livePlans: [String: JSONValue]
    /// The lease's TTL, filled in by the engine: drivers whose helpers must also end by themselves (stress workers)
    /// give them a deadline from it.
    public var ttl: Duration?

    public init(
        owner: String, callerPID: Int32? = nil, heldClaims: [String: String] = [:], livePlans: [String: JSONValue] = [:],
        ttl: Duration? = nil
    ) {
        self.owner = owner
        self.callerPID = callerPID
        self.heldClaims = heldClaims
        self.livePlans = livePlans
        self.ttl = ttl
    }
}

/// A fault spec resolved against this host, ready to be journaled and then applied.
public struct PreparedFault: Sendable, Equatable {
    /// What the user sees as the resolved target.
    public var target: JSONValue
    /// Everything `revert` needs, journaled before `apply` runs: it must let a fresh process (after a crash) undo
    /// whatever part of the fault was applied.
    public var plan: JSONValue
    /// Exclusive claims on host objects (for example `process:4242:123456`); two active faults never share one.
    public var claims: [String]

    public init(target: JSONValue, plan: JSONValue, claims: [String]) {
        self.target = target
        self.plan = plan
        self.claims = claims
    }
}

/// One fault kind. The lease engine calls these; a driver knows its OS mechanism and nothing about leases.
///
/// Contract:
/// - `prepare` validates the spec and resolves it; it changes nothing on the host. It throws `AgentError` (400 for a
///   bad spec naming the field, 422 for policy refusals, 409 never: the engine checks claims).
/// - `apply` makes the fault real and verifies it against the kernel before returning. If it throws, the engine
///   calls `revert` with the same plan to undo any partial effect.
/// - `revert` is idempotent and must succeed when the fault is already gone (or was never applied).
/// - `sustain` runs for the life of an active fault (for faults that act repeatedly) and is cancelled at revert.
public protocol FaultDriver: Sendable {
    var kind: String { get }
    /// Whether this kind can work on this host, and if not, why.
    func availability() -> KindAvailability
    func prepare(spec: JSONValue, context: FaultContext) throws -> PreparedFault
    /// Returns an updated target/plan when applying learned something revert needs, or nil.
    func apply(plan: JSONValue) async throws -> PreparedFault?
    func revert(plan: JSONValue) async throws
    func sustain(plan: JSONValue) async
    /// At start-up and in `reap`, after the journal's leases were reverted: removes what this kind installs that no
    /// live lease explains (for example a qdisc with the agent's reserved handle left by a run whose journal was
    /// lost). `livePlans` are the plans of leases still held. Returns one line per thing removed.
    func reconcileOrphans(livePlans: [JSONValue]) async -> [String]
    /// A renew moved the fault's deadline to `until`: helpers that end by themselves (stress workers) must live that
    /// long now. Called before the renew is journaled; throwing refuses the renew. Must not shorten anything.
    func extend(plan: JSONValue, until: Date) throws
    /// Whether `prepare` builds on `context.livePlans` (sibling faults sharing host objects). The engine fills them
    /// in only for such drivers, and prepares again when they changed before the fault was journaled.
    var preparesFromLivePlans: Bool { get }
}

extension FaultDriver {
    public func sustain(plan: JSONValue) async {}
    public func reconcileOrphans(livePlans: [JSONValue]) async -> [String] { [] }
    public func extend(plan: JSONValue, until: Date) throws {}
    public var preparesFromLivePlans: Bool { false }
}

/// A revert that retrying can never make succeed (the kernel refuses the request itself as invalid, the plan names
/// something the driver could never have created). A driver throws it only once it has made sure none of its fault
/// remains; the engine then ends the lease as `failed` with this reason, loudly, instead of retrying for ever. (A plan
/// this version cannot decode is handled the same way by the engine, after sweeping what no other lease explains.)
public struct PermanentRevertFailure: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
