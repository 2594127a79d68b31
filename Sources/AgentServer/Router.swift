import AgentAPI
import AgentCore
import Foundation

/// A request as the router sees it, independent of the transport.
public struct APIRequest: Sendable {
    public var method: String
    public var path: String
    public var headers: [String: String]
    public var body: Data

    public init(method: String, path: String, headers: [String: String] = [:], body: Data = Data()) {
        self.method = method.uppercased()
        self.path = path
        var lower: [String: String] = [:]
        for (k, v) in headers { lower[k.lowercased()] = v }
        self.headers = lower
        self.body = body
    }
}

/// What the router answers: one JSON document, or a stream of events (server-sent events).
public enum APIResponse: Sendable {
    case json(status: Int, body: Data)
    case events(AsyncStream<FaultEvent>)
    /// A text document other than JSON (the Prometheus exposition format).
    case text(status: Int, contentType: String, body: String)

    public var status: Int {
        switch self {
        case .json(let s, _): return s
        case .events: return 200
        case .text(let s, _, _): return s
        }
    }
}

/// Who is calling, as the transport authenticated them, and what they may do.
public struct Caller: Sendable, Equatable {
    /// `unix:root`, `unix:alice`, `unix:uid=1234`, or `tls:<certificate identity>`.
    public var identity: String
    public var role: Role
    /// The caller's process, when the transport knows it (SO_PEERCRED).
    public var pid: Int32?

    public init(identity: String, role: Role, pid: Int32? = nil) {
        self.identity = identity
        self.role = role
        self.pid = pid
    }
}

/// The HTTP API: routes to the lease engine, authorisation, input validation and error mapping. Pure: no sockets, so
/// tests call it in-process.
public struct APIRouter: Sendable {
    let engine: LeaseEngine
    let status: @Sendable () async -> AgentStatus
    let maxBody: Int
    let metrics: (@Sendable () -> String)?

    /// `metrics` renders the Prometheus text exposition for `GET /metrics` (404 without it).
    public init(
        engine: LeaseEngine, maxBody: Int = 64 * 1024, metrics: (@Sendable () -> String)? = nil,
        status: @escaping @Sendable () async -> AgentStatus
    ) {
        self.engine = engine
        self.status = status
        self.maxBody = maxBody
        self.metrics = metrics
    }

    /// The role a request needs. Reading needs `viewer`; changing a fault `operator`; reverting every fault and
    /// overriding policy (network `noDefaultExclusions`) `admin`.
    static func requiredRole(method: String, route: Route?, body: Data) -> Role {
        if method == "GET" || method == "HEAD" { return .viewer }
        switch (method, route) {
        case ("DELETE", .faults?): return .admin
        case ("POST", .faults?):
            if case .object(let o)? = try? StrictJSON.parse(body),
                case .object(let spec)? = o["spec"], spec["noDefaultExclusions"] == .bool(true)
            {
                return .admin
            }
            return .operator
        default: return .operator
        }
    }

    static func describe(_ role: Role, method: String, path: String) -> String {
        switch role {
        case .viewer: return "reading"
        case .operator: return "\(method) \(path)"
        case .admin:
            return method == "DELETE" ? "reverting every fault at once" : "overriding policy (noDefaultExclusions)"
        }
    }

    static let requestKeys: Set<String> = ["kind", "ttl", "heartbeat", "labels", "spec"]

    public func handle(_ request: APIRequest, caller: Caller) async -> APIResponse {
        do {
            return try await route(request, caller: caller)
        } catch let e as AgentError {
            return Self.error(e)
        } catch {
            return Self.error(.failed("\(error)"))
        }
    }

    private func route(_ r: APIRequest, caller: Caller) async throws -> APIResponse {
        let (path, parts, query) = try Self.target(r.path)
        if r.body.count > maxBody {
            throw AgentError.tooLarge("request body is \(r.body.count) bytes; the limit is \(maxBody)")
        }
        let route = parts.flatMap { Route($0) }
        let needed = Self.requiredRole(method: r.method, route: route, body: r.body)
        guard caller.role >= needed else {
            throw AgentError.forbidden(
                "\(caller.identity) has the \(caller.role.rawValue) role; "
                    + "\(Self.describe(needed, method: r.method, path: path)) needs \(needed.rawValue) (see docs/security.md)")
        }
        guard let route else { throw AgentError.notFound("no route \(r.method) \(path); see docs/api.md") }
        // No route takes query parameters (yet): refuse them rather than ignore them, so that
        // `DELETE /v1/faults?id=x` can never mean "revert every fault".
        if let query {
            let name = query.split(separator: "&", omittingEmptySubsequences: false).first
                .map { String($0.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first ?? "") } ?? ""
            throw AgentError.badRequest(
                name.isEmpty
                    ? "empty query in \(r.path); \(r.method) \(path) takes no query parameters"
                    : "unknown query parameter '\(name.prefix(64))'; \(r.method) \(path) takes no query parameters",
                field: name.isEmpty ? "query" : "query.\(name.prefix(64))")
        }
        switch (r.method, route) {
        case ("GET", .healthz):
            guard await engine.isAccepting else { throw AgentError.notReady("reconciling the journal or shutting down") }
            return try Self.json(200, ["status": "ok"])
        case ("GET", .metrics):
            guard let metrics else { throw AgentError.notFound("metrics are not enabled on this agent") }
            return .text(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics())
        case ("GET", .status):
            return try Self.json(200, await status())
        case ("GET", .faults):
            return try Self.json(200, FaultList(faults: await engine.list()))
        case ("POST", .faults):
            let request = try Self.decodeFaultRequest(r.body)
            let context = FaultContext(owner: caller.identity, callerPID: caller.pid)
            let engine = self.engine
            let key = r.headers["idempotency-key"]
            // Unstructured: a client that disconnects mid-apply must not cancel the apply half-way.
            let outcome = try await Task { try await engine.submit(request, context: context, idempotencyKey: key) }.value
            return try Self.json(outcome.replayed ? 200 : 201, outcome.fault)
        case ("DELETE", .faults):
            let engine = self.engine
            let who = caller.identity
            let reverted = await Task { await engine.revertAll(reason: "revoked by \(who)") }.value
            return try Self.json(200, RevertAllResult(reverted: reverted))
        case ("GET", .fault(let id)):
            return try Self.json(200, try await engine.get(id))
        case ("DELETE", .fault(let id)):
            let engine = self.engine
            let who = caller.identity
            let fault = try await Task { try await engine.revert(id, by: who) }.value
            return try Self.json(200, fault)
        case ("POST", .renew(let id)):
            let body = try Self.decodeObject(r.body)
            for key in body.keys where key != "ttl" {
                throw AgentError.badRequest("unknown field '\(key)'; renew takes only ttl", field: key)
            }
            guard let ttlValue = body["ttl"] else { throw AgentError.badRequest("ttl is required", field: "ttl") }
            guard case .string(let ttl) = ttlValue else {
                throw AgentError.badRequest("ttl must be a string like \"30s\"", field: "ttl")
            }
            return try Self.json(200, try await engine.renew(id, ttl: ttl, owner: caller.identity))
        case ("POST", .heartbeat(let id)):
            if !r.body.isEmpty {
                let body = try Self.decodeObject(r.body)
                if let key = body.keys.sorted().first {
                    throw AgentError.badRequest("unknown field '\(key)'; a heartbeat takes no fields", field: key)
                }
            }
            return try Self.json(200, try await engine.heartbeat(id))
        case ("GET", .events):
            let last = r.headers["last-event-id"].flatMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
            return .events(await engine.events(after: last))
        default:
            throw AgentError(status: 405, code: "method-not-allowed", message: "\(r.method) is not allowed on \(path)")
        }
    }

    /// The longest request target the router reads (the HTTP layer answers 414 before this in practice).
    static let maxTarget = 8 * 1024

    /// Splits a request target into its path, the path's segments and the raw query. One path, one meaning: the
    /// target must be origin-form (`/...`); an empty segment (`//v1`, `/v1/faults/`) matches no route (`parts` is
    /// nil, so the answer is 404), and so does a path with control characters or a fragment.
    static func target(_ raw: String) throws -> (path: String, parts: [String]?, query: String?) {
        guard raw.utf8.count <= maxTarget else {
            throw AgentError(status: 414, code: "uri-too-long", message: "the request target is over \(maxTarget) bytes")
        }
        guard raw.hasPrefix("/") else {
            throw AgentError.badRequest("the request target must be a path starting with '/'", field: "path")
        }
        let split = raw.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(split[0])
        let query = split.count > 1 ? String(split[1]) : nil
        var segments = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        segments.removeFirst()  // before the leading '/'
        let clean = !segments.contains(where: \.isEmpty) && !raw.contains("#") && !raw.hasControlCharacters
        return (path, clean ? segments : nil, query)
    }

    /// The paths the API knows.
    enum Route {
        case healthz, metrics, status, faults, events
        case fault(String)
        case renew(String)
        case heartbeat(String)

        init?(_ parts: [String]) {
            switch parts.count {
            case 1 where parts[0] == "healthz": self = .healthz
            case 1 where parts[0] == "metrics": self = .metrics
            case 2 where parts[0] == "v1" && parts[1] == "status": self = .status
            case 2 where parts[0] == "v1" && parts[1] == "faults": self = .faults
            case 2 where parts[0] == "v1" && parts[1] == "events": self = .events
            case 3 where parts[0] == "v1" && parts[1] == "faults": self = .fault(parts[2])
            case 4 where parts[0] == "v1" && parts[1] == "faults" && parts[3] == "renew": self = .renew(parts[2])
            case 4 where parts[0] == "v1" && parts[1] == "faults" && parts[3] == "heartbeat": self = .heartbeat(parts[2])
            default: return nil
            }
        }
    }

    // MARK: - Decoding with field-precise errors

    static func decodeObject(_ body: Data) throws -> [String: JSONValue] {
        guard !body.isEmpty else { throw AgentError.badRequest("request body is empty; expected a JSON object") }
        let value: JSONValue
        do {
            value = try StrictJSON.parse(body)
        } catch let e as StrictJSON.ParseError {
            throw AgentError.badRequest(e.message, field: e.field)
        } catch {
            throw AgentError.badRequest("malformed JSON: \(error)")
        }
        guard case .object(let o) = value else { throw AgentError.badRequest("request body must be a JSON object") }
        return o
    }

    static func decodeFaultRequest(_ body: Data) throws -> FaultRequest {
        let o = try decodeObject(body)
        for key in o.keys.sorted() where !requestKeys.contains(key) {
            throw AgentError.badRequest(
                "unknown field '\(key)'; a fault has \(requestKeys.sorted().joined(separator: ", "))", field: key)
        }
        guard let kindValue = o["kind"] else {
            throw AgentError.badRequest("kind is required (pause, kill, ...)", field: "kind")
        }
        guard case .string(let kind) = kindValue else { throw AgentError.badRequest("kind must be a string", field: "kind") }
        for (key, value) in [("kind", o["kind"]), ("ttl", o["ttl"]), ("heartbeat", o["heartbeat"])] {
            if case .string(let s)? = value, s.hasControlCharacters || s.utf8.count > 256 {
                throw AgentError.badRequest("\(key) must be at most 256 characters without control characters", field: key)
            }
        }
        guard let ttlValue = o["ttl"], ttlValue != .null else {
            throw AgentError.badRequest("ttl is required: every fault ends by itself (for example \"30s\")", field: "ttl")
        }
        guard case .string(let ttl) = ttlValue else {
            throw AgentError.badRequest("ttl must be a string with a unit, like \"30s\"", field: "ttl")
        }
        var heartbeat: String?
        if let h = o["heartbeat"], h != .null {
            guard case .string(let s) = h else { throw AgentError.badRequest("heartbeat must be a duration string", field: "heartbeat") }
            heartbeat = s
        }
        var labels: [String: String]?
        if let l = o["labels"], l != .null {
            guard case .object(let lo) = l else {
                throw AgentError.badRequest("labels must be an object of strings", field: "labels")
            }
            var out: [String: String] = [:]
            for (k, v) in lo.sorted(by: { $0.key < $1.key }) {
                guard !k.hasControlCharacters else {
                    throw AgentError.badRequest("label keys must not hold control characters", field: "labels")
                }
                guard case .string(let s) = v else {
                    throw AgentError.badRequest("label '\(k)' must be a string", field: "labels.\(k)")
                }
                guard !s.hasControlCharacters else {
                    throw AgentError.badRequest("label '\(k)' must not hold control characters", field: "labels.\(k)")
                }
                out[k] = s
            }
            labels = out
        }
        let spec = o["spec"] ?? .object([:])
        guard case .object = spec else { throw AgentError.badRequest("spec must be a JSON object", field: "spec") }
        return FaultRequest(kind: kind, ttl: ttl, heartbeat: heartbeat, labels: labels, spec: spec)
    }

    // MARK: - Encoding

    static func json(_ status: Int, _ value: some Encodable) throws -> APIResponse {
        .json(status: status, body: try WireCoding.encoder().encode(value))
    }

    public static func error(_ e: AgentError) -> APIResponse {
        let body = (try? WireCoding.encoder().encode(e.body)) ?? Data("{\"error\":{\"code\":\"internal\"}}".utf8)
        return .json(status: e.status, body: body)
    }
}
