import Foundation

/// Lifecycle of a fault. `applying -> active -> reverting -> reverted`, or `failed` when the apply did not take.
public enum FaultState: String, Codable, Sendable, CaseIterable {
    case applying, active, reverting, reverted, failed

    /// A fault in this state is over: nothing of it remains on the host.
    public var isFinal: Bool { self == .reverted || self == .failed }
}

/// `POST /v1/faults` body.
public struct FaultRequest: Codable, Sendable, Equatable {
    public var kind: String
    public var ttl: String
    public var heartbeat: String?
    public var labels: [String: String]?
    public var spec: JSONValue

    public init(kind: String, ttl: String, heartbeat: String? = nil, labels: [String: String]? = nil, spec: JSONValue) {
        self.kind = kind
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.labels = labels
        self.spec = spec
    }
}

/// `POST /v1/faults/{id}/renew` body.
public struct RenewRequest: Codable, Sendable, Equatable {
    public var ttl: String
    public init(ttl: String) { self.ttl = ttl }
}

/// A fault as the API shows it.
public struct FaultObject: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var spec: JSONValue
    /// What the spec resolved to on this host (for example the processes a pause stopped).
    public var target: JSONValue
    public var state: FaultState
    public var createdAt: Date
    public var expiresAt: Date
    public var revertedAt: Date?
    public var owner: String
    public var labels: [String: String]
    /// Why the fault failed, or why its revert is still being retried.
    public var error: String?
    /// The TTL the fault was created or last renewed with, as written.
    public var ttl: String
    /// Revert attempts that failed so far (retried with backoff until the fault is gone).
    public var revertAttempts: Int
    /// The heartbeat interval the fault was created with (`null` without one).
    public var heartbeat: String?
    /// When the fault is reverted unless a heartbeat (or renew) arrives first (`null` without a heartbeat).
    public var heartbeatDueAt: Date?
    /// Why the fault ended: `expired`, `heartbeat-missed`, `revoked by ...`, `shutdown`, `recovered`, `apply-failed`.
    public var revertReason: String?

    public init(
        id: String, kind: String, spec: JSONValue, target: JSONValue, state: FaultState, createdAt: Date,
        expiresAt: Date, revertedAt: Date?, owner: String, labels: [String: String], error: String?, ttl: String,
        revertAttempts: Int = 0, heartbeat: String? = nil, heartbeatDueAt: Date? = nil, revertReason: String? = nil
    ) {
        self.id = id
        self.kind = kind
        self.spec = spec
        self.target = target
        self.state = state
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revertedAt = revertedAt
        self.owner = owner
        self.labels = labels
        self.error = error
        self.ttl = ttl
        self.revertAttempts = revertAttempts
        self.heartbeat = heartbeat
        self.heartbeatDueAt = heartbeatDueAt
        self.revertReason = revertReason
    }
}

extension FaultObject {
    private enum CodingKeys: String, CodingKey {
        case id, kind, spec, target, state, createdAt, expiresAt, revertedAt, owner, labels, error, ttl, revertAttempts
        case heartbeat, heartbeatDueAt, revertReason
    }

    /// Every field is always present: `revertedAt` and `error` are `null` until they have a value.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(kind, forKey: .kind)
        try c.encode(spec, forKey: .spec)
        try c.encode(target, forKey: .target)
        try c.encode(state, forKey: .state)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(expiresAt, forKey: .expiresAt)
        try c.encode(revertedAt, forKey: .revertedAt)
        try c.encode(owner, forKey: .owner)
        try c.encode(labels, forKey: .labels)
        try c.encode(error, forKey: .error)
        try c.encode(ttl, forKey: .ttl)
        try c.encode(revertAttempts, forKey: .revertAttempts)
        try c.encode(heartbeat, forKey: .heartbeat)
        try c.encode(heartbeatDueAt, forKey: .heartbeatDueAt)
        try c.encode(revertReason, forKey: .revertReason)
    }
}

/// `GET /v1/faults` answer.
public struct FaultList: Codable, Sendable, Equatable {
    public var faults: [FaultObject]
    public init(faults: [FaultObject]) { self.faults = faults }
}

/// `DELETE /v1/faults` answer: the faults that were reverted (or are still reverting).
public struct RevertAllResult: Codable, Sendable, Equatable {
    public var reverted: [FaultObject]
    public init(reverted: [FaultObject]) { self.reverted = reverted }
}

/// Whether a fault kind can work on this host, and if not, why.
public struct KindAvailability: Codable, Sendable, Equatable {
    public var kind: String
    public var available: Bool
    public var reason: String?
    public init(kind: String, available: Bool, reason: String? = nil) {
        self.kind = kind
        self.available = available
        self.reason = reason
    }
}

/// What the agent learned about this host at start-up.
public struct HostFacts: Codable, Sendable, Equatable {
    public var kernel: String
    public var euid: UInt32
    /// Effective capabilities the agent holds that matter to it (CAP_KILL, CAP_NET_ADMIN, CAP_SYS_ADMIN, ...).
    public var capabilities: [String]
    public var pidfd: Bool
    /// Mount point of the cgroup v2 hierarchy, if any.
    public var cgroup2Mount: String?
    /// Controllers available at the cgroup v2 root.
    public var cgroupControllers: [String]
    public var netlink: Bool
    /// Traffic-control pieces this kernel has, built in or as a module: netem, prio, tbf, u32, flower, ifb, mirred,
    /// clsact.
    public var trafficControl: [String: Bool]?

    public init(
        kernel: String, euid: UInt32, capabilities: [String], pidfd: Bool, cgroup2Mount: String?,
        cgroupControllers: [String], netlink: Bool, trafficControl: [String: Bool]? = nil
    ) {
        self.kernel = kernel
        self.euid = euid
        self.capabilities = capabilities
        self.pidfd = pidfd
        self.cgroup2Mount = cgroup2Mount
        self.cgroupControllers = cgroupControllers
        self.netlink = netlink
        self.trafficControl = trafficControl
    }
}

/// `GET /v1/status` answer.
public struct AgentStatus: Codable, Sendable, Equatable {
    public var version: String
    public var pid: Int32
    public var startedAt: Date
    public var uptimeSeconds: Double
    public var socket: String
    public var stateDir: String
    public var maxTTL: String
    public var activeFaults: Int
    public var host: HostFacts
    public var kinds: [KindAvailability]
    /// What start-up reconciliation found in the journal and reverted.
    public var recovered: Int

    public init(
        version: String, pid: Int32, startedAt: Date, uptimeSeconds: Double, socket: String, stateDir: String,
        maxTTL: String, activeFaults: Int, host: HostFacts, kinds: [KindAvailability], recovered: Int
    ) {
        self.version = version
        self.pid = pid
        self.startedAt = startedAt
        self.uptimeSeconds = uptimeSeconds
        self.socket = socket
        self.stateDir = stateDir
        self.maxTTL = maxTTL
        self.activeFaults = activeFaults
        self.host = host
        self.kinds = kinds
        self.recovered = recovered
    }
}

/// One lifecycle event, as `GET /v1/events` streams it (server-sent events, `id:` = `seq`).
public struct FaultEvent: Codable, Sendable, Equatable {
    public enum EventType: String, Codable, Sendable {
        case applied, renewed, reverted, failed
        case revertFailed = "revert-failed"
        case heartbeatMissed = "heartbeat-missed"
    }
    public var seq: UInt64
    public var type: EventType
    public var at: Date
    public var fault: FaultObject

    public init(seq: UInt64, type: EventType, at: Date, fault: FaultObject) {
        self.seq = seq
        self.type = type
        self.at = at
        self.fault = fault
    }
}

/// Every error answer: `{"error": {"code": "...", "message": "...", "field": "..."}}`.
public struct ErrorBody: Codable, Sendable, Equatable {
    public struct Detail: Codable, Sendable, Equatable {
        public var code: String
        public var message: String
        /// The request field at fault, for 400s.
        public var field: String?
        public init(code: String, message: String, field: String? = nil) {
            self.code = code
            self.message = message
            self.field = field
        }
    }
    public var error: Detail
    public init(code: String, message: String, field: String? = nil) {
        self.error = Detail(code: code, message: message, field: field)
    }
}

/// The JSON coders every side uses: dates as RFC 3339 with microseconds, keys sorted for stable output.
public enum WireCoding {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(RFC3339.format(date))
        }
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = RFC3339.parse(s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an RFC 3339 time: \(s)")
            }
            return date
        }
        return d
    }
}
