import AgentAPI
import Foundation

/// Everything that can go wrong talking to the agent.
public enum AgentClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The agent could not be reached at all (no socket, nobody listening, no permission, connection dropped).
    case unreachable(path: String, reason: String)
    /// The agent answered with an error status and body.
    case http(status: Int, ErrorBody)
    /// The agent answered something this client does not understand.
    case protocolError(String)
    /// The command line names an endpoint that cannot work (bad --host URL, unreadable --cert/--key/--ca).
    case usage(String)

    public var description: String {
        switch self {
        case .unreachable(let path, let reason):
            return "cannot reach chaos-agentd at \(path): \(reason)"
        case .http(let status, let body):
            var s = body.error.message
            if let field = body.error.field, !s.contains(field) { s += " (field '\(field)')" }
            return "\(s) [HTTP \(status) \(body.error.code)]"
        case .protocolError(let what):
            return "unexpected answer from chaos-agentd: \(what)"
        case .usage(let what):
            return what
        }
    }

    /// The HTTP status, for `.http`.
    public var status: Int? {
        if case .http(let status, _) = self { return status }
        return nil
    }
}

extension AgentClientError {
    /// Reason text for a failed `connect(2)` on the socket.
    static func connectReason(errno code: Int32) -> String {
        switch code {
        case ENOENT: return "no such socket (is chaos-agentd running? check 'systemctl status chaos-agent', or pass --socket)"
        case ECONNREFUSED: return "connection refused (stale socket: is chaos-agentd running?)"
        case EACCES, EPERM: return "permission denied: is your user in the chaos-agent group?"
        case ENOTDIR: return "not a socket path (a parent is not a directory)"
        case ENOTSOCK: return "not a socket"
        default: return String(cString: strerror(code))
        }
    }
}
