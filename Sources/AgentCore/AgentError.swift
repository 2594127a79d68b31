import AgentAPI

/// The one error type the API maps to answers: an HTTP status, a stable code, a sentence for a person, and the
/// request field at fault when there is one.
public struct AgentError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var code: String
    public var message: String
    public var field: String?

    public init(status: Int, code: String, message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String { field.map { "\(message) (field \($0))" } ?? message }

    public var body: ErrorBody { ErrorBody(code: code, message: message, field: field) }

    /// 400: the request itself is wrong; `field` names what.
    public static func badRequest(_ message: String, field: String? = nil) -> AgentError {
        AgentError(status: 400, code: "bad-request", message: message, field: field)
    }
    public static func forbidden(_ message: String) -> AgentError {
        AgentError(status: 403, code: "forbidden", message: message)
    }
    public static func notFound(_ message: String) -> AgentError {
        AgentError(status: 404, code: "not-found", message: message)
    }
    public static func conflict(_ message: String) -> AgentError {
        AgentError(status: 409, code: "conflict", message: message)
    }
    public static func tooLarge(_ message: String) -> AgentError {
        AgentError(status: 413, code: "too-large", message: message)
    }
    /// 422: valid, but policy says no.
    public static func refused(_ message: String, field: String? = nil) -> AgentError {
        AgentError(status: 422, code: "refused", message: message, field: field)
    }
    /// 422: valid, but this host cannot do it.
    public static func unsupported(_ message: String) -> AgentError {
        AgentError(status: 422, code: "unsupported", message: message)
    }
    public static func notReady(_ message: String) -> AgentError {
        AgentError(status: 503, code: "not-ready", message: message)
    }
    /// 507: the state directory cannot be written (full, read-only, failing), so no fault can be journaled and none is
    /// applied; reverts go on.
    public static func stateNotWritable(_ message: String) -> AgentError {
        AgentError(status: 507, code: "state-not-writable", message: message)
    }
    /// 500: the kernel or the host said no to something that should have worked.
    public static func failed(_ message: String) -> AgentError {
        AgentError(status: 500, code: "apply-failed", message: message)
    }
}
