import AgentAPI
import AgentClient
import ArgumentParser
import Foundation

/// Exit statuses of chaos-agentctl (see `docs` in the root command's help).
public enum CtlExitCode {
    public static let success: Int32 = 0
    public static let failure: Int32 = 1
    public static let usage: Int32 = 2
    public static let refused: Int32 = 3
    public static let notFound: Int32 = 4
    public static let unreachable: Int32 = 5
    public static let interrupted: Int32 = 130

    /// The exit status for an HTTP error status from the agent.
    public static func forHTTPStatus(_ status: Int) -> Int32 {
        switch status {
        case 400, 413: return usage
        case 401, 403, 409, 422: return refused
        case 404: return notFound
        case 503: return unreachable
        default: return failure
        }
    }
}

/// An error that ends the command with a given exit status and a one-line message (printed by `CtlMain`).
struct CtlFailure: Error {
    var code: Int32
    var message: String
    var hint: String?

    init(_ code: Int32, _ message: String, hint: String? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
    }
}

/// The whole CLI. `Sources/chaos-agentctl/main.swift` calls `CtlMain.main()`.
public enum CtlMain {
    public static func main() async -> Never {
        let code = await run(Array(CommandLine.arguments.dropFirst()))
        fflush(nil)
        exit(code)
    }

    /// Parses and runs one command line; prints to stdout/stderr; returns the exit status.
    public static func run(_ arguments: [String]) async -> Int32 {
        let command: any ParsableCommand
        do {
            command = try ChaosAgentCtl.parseAsRoot(arguments)
        } catch {
            return handleParseError(error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var syncCommand = command
                try syncCommand.run()
            }
            return CtlExitCode.success
        } catch {
            return report(error)
        }
    }

    /// Maps any error to its exit status, printing the one-line message on stderr.
    static func report(_ error: any Error) -> Int32 {
        switch error {
        case let failure as CtlFailure:
            printError(failure.message, hint: failure.hint)
            return failure.code
        case let clientError as AgentClientError:
            let (message, hint) = describe(clientError)
            printError(message, hint: hint)
            switch clientError {
            case .unreachable: return CtlExitCode.unreachable
            case .http(let status, _): return CtlExitCode.forHTTPStatus(status)
            case .protocolError: return CtlExitCode.failure
            case .usage: return CtlExitCode.usage
            }
        case let exit as ExitCode:
            return exit.rawValue
        case is CancellationError:
            return CtlExitCode.interrupted
        default:
            // ArgumentParser errors thrown from run() (ValidationError, CleanExit) and anything else.
            return handleParseError(error)
        }
    }

    static func handleParseError(_ error: any Error) -> Int32 {
        let code = ChaosAgentCtl.exitCode(for: error)
        if code == .success {
            // --help, --version and friends: ArgumentParser prints them and exits 0.
            ChaosAgentCtl.exit(withError: error)
        }
        if code == .validationFailure {
            // ArgumentParser says 64 (EX_USAGE); our contract says 2. Keep its message and usage lines.
            let full = ChaosAgentCtl.fullMessage(for: error)
            var lines = full.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            var first = lines.isEmpty ? ChaosAgentCtl.message(for: error) : lines.removeFirst()
            if first.hasPrefix("Error: ") { first.removeFirst("Error: ".count) }
            FileHandle.standardError.write(Data(("chaos-agentctl: " + first + "\n").utf8))
            let rest = lines.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
            if !rest.isEmpty { FileHandle.standardError.write(Data((rest + "\n").utf8)) }
            return CtlExitCode.usage
        }
        if error is ExitCode { return code.rawValue }
        printError(ChaosAgentCtl.message(for: error))
        return code.rawValue == 0 ? CtlExitCode.failure : code.rawValue
    }

    static func describe(_ error: AgentClientError) -> (String, String?) {
        switch error {
        case .unreachable, .usage:
            return (error.description, nil)
        case .protocolError:
            return (error.description, "is the socket really chaos-agentd's, and the same version as this CLI?")
        case .http(let status, let body):
            var message = body.error.message
            let field = body.error.field
            if status == 400, let field, !message.contains(field) { message += " (field '\(field)')" }
            let hint: String?
            switch (status, body.error.code) {
            case (400, _), (413, _): hint = "see 'chaos-agentctl <command> --help'"
            case (401, _), (403, _):
                hint = "over the socket: root is admin, the socket's group (chaos-agent) operator; over TLS: [remote.roles]"
            case (404, _): hint = "'chaos-agentctl list --all' shows current and recently ended faults"
            case (409, _): hint = "'chaos-agentctl list' shows the faults the agent holds"
            case (422, "unsupported"): hint = "'chaos-agentctl status' shows which kinds work on this host"
            case (422, _):
                if field?.hasPrefix("spec") == true {
                    hint = "choose another target"
                } else if field == "ttl" || message.lowercased().contains("ttl") {
                    hint = message.lowercased().contains("renew") ? nil : "use a shorter --ttl and renew it"
                } else {
                    hint = nil
                }
            case (503, _): hint = "the agent is starting or stopping; try again in a moment"
            default: hint = nil
            }
            let prefix: String
            switch status {
            case 403: prefix = "forbidden: "
            case 404: prefix = "not found: "
            case 409: prefix = "conflict: "
            case 422: prefix = body.error.code == "unsupported" ? "unsupported: " : "refused: "
            case 503: prefix = "agent not ready: "
            case 400, 413: prefix = "bad request: "
            default: prefix = "agent error (HTTP \(status)): "
            }
            return (prefix + message, hint)
        }
    }
}

/// One line on stderr: `chaos-agentctl: <message> - <hint>`.
func printError(_ message: String, hint: String? = nil) {
    var line = "chaos-agentctl: " + message
    if let hint { line += " - " + hint }
    Terminal.stderr(line)
}
