import AgentAPI
import AgentClient
import ArgumentParser
import Foundation

/// Options every command takes; they may come before or after the subcommand name.
struct GlobalOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The agent's Unix socket (default: $CHAOS_AGENT_SOCKET, else /run/chaos-agent/agent.sock).",
            valueName: "path"))
    var socket: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A remote agent's mutual-TLS listener, https://HOST:PORT (needs --cert, --key and --ca).", valueName: "url"))
    var host: String?

    @Option(name: .long, help: ArgumentHelp("Client certificate (PEM) for --host.", valueName: "file"))
    var cert: String?

    @Option(name: .long, help: ArgumentHelp("Private key (PEM) of --cert.", valueName: "file"))
    var key: String?

    @Option(name: .long, help: ArgumentHelp("CA (PEM) that the agent's certificate must chain to.", valueName: "file"))
    var ca: String?

    @Flag(name: .long, help: "Machine output: the API's JSON on stdout (errors stay on stderr).")
    var json = false

    func validate() throws {
        guard let host else {
            if cert != nil || key != nil || ca != nil { throw ValidationError("--cert, --key and --ca go with --host") }
            return
        }
        if socket != nil { throw ValidationError("give --socket or --host, not both") }
        guard cert != nil, key != nil, ca != nil else {
            throw ValidationError("--host \(host) needs --cert FILE --key FILE --ca FILE (the agent requires mutual TLS)")
        }
    }

    func endpoint() throws -> AgentEndpoint {
        if let host, let cert, let key, let ca {
            return try .https(host, tls: ClientTLSFiles(certificate: cert, privateKey: key, ca: ca))
        }
        return .unixSocket(AgentEndpoint.resolveSocketPath(socket))
    }

    /// Runs `body` with a client for the chosen agent, shutting it down afterwards.
    func withClient<T: Sendable>(_ body: (AgentClient) async throws -> T) async throws -> T {
        try await AgentClient.withClient(try endpoint(), body)
    }
}

struct ChaosAgentCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos-agentctl",
        abstract: "Control chaos-agentd: inject faults that always revert, list, renew and revert them.",
        discussion: """
            Every fault has a TTL: the agent reverts it by itself when the TTL runs out, when you revert it, \
            and when the agent stops. Nothing outlives the agent.

            EXAMPLES
              chaos-agentctl status
              chaos-agentctl inject pause --name '^nginx' --ttl 30s --wait
              chaos-agentctl inject kill --pid 4242 --signal TERM --ttl 1m
              chaos-agentctl list
              chaos-agentctl revert --all
              chaos-agentctl --host https://db-7:7410 --cert me.pem --key me.key --ca ca.pem \\
                inject pause --name '^postgres' --ttl 5m --heartbeat 10s

            DURATIONS
              A number and a unit, units may be combined: 250ms, 30s, 5m, 1h, 1h30m
              (also ns, us, d). A bare number is refused.
            SIZES
              512KiB, 256MiB, 1GiB (powers of 1024); 10MB, 1GB (powers of 1000);
              a bare number is bytes.
            RATES AND PERCENTAGES
              1mbit, 10MB/s; 5%, 0.5%.

            REMOTE AGENTS
              --host https://HOST:PORT with --cert, --key and --ca talks to an agent's mutual-TLS
              listener; every command works the same. What you may do depends on the role your
              certificate maps to in the agent's [remote.roles] (viewer, operator, admin).

            ENVIRONMENT
              CHAOS_AGENT_SOCKET   the socket to use when --socket is not given.

            EXIT STATUS
              0  success
              1  anything else (including a fault that ended 'failed' under --wait)
              2  usage error: bad flags, bad duration, or the agent said 400 (bad request)
              3  refused: policy (PID 1, protected process, TTL over the cap), conflict,
                 unsupported on this host, or forbidden (403, 409, 422)
              4  not found (404): no such fault
              5  agent unreachable: no socket, connection refused or denied,
                 or not ready (503)
              130  interrupted: --wait stopped by Ctrl-C or SIGTERM (fault reverted)
            """,
        version: "chaos-agentctl 0.1.0",
        subcommands: [
            StatusCommand.self, InjectCommand.self, ListCommand.self, GetCommand.self, RenewCommand.self,
            RevertCommand.self, EventsCommand.self,
        ]
    )

    @OptionGroup var global: GlobalOptions
}
