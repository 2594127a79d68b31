import AgentAPI
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A client of the chaos-agentd HTTP API.
///
/// It owns one `HTTPClient`; call `shutdown()` when done (or use `withClient`).
public struct AgentClient: Sendable {
    public let endpoint: AgentEndpoint
    private let http: HTTPClient

    public init(endpoint: AgentEndpoint) throws {
        self.endpoint = endpoint
        self.http = try endpoint.makeHTTPClient()
    }

    public init(socketPath: String) {
        // A Unix-socket client loads no files, so it cannot fail.
        self = try! AgentClient(endpoint: .unixSocket(socketPath))
    }

    /// Creates a client, runs `body`, shuts the client down whatever happens.
    public static func withClient<T: Sendable>(
        _ endpoint: AgentEndpoint, _ body: (AgentClient) async throws -> T
    ) async throws -> T {
        let client = try AgentClient(endpoint: endpoint)
        do {
            let result = try await body(client)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    // MARK: - API

    public func healthz() async throws {
        _ = try await send(.GET, "/healthz")
    }

    public func status() async throws -> AgentStatus {
        try decode(AgentStatus.self, from: try await send(.GET, "/v1/status"))
    }

    public func list() async throws -> [FaultObject] {
        try decode(FaultList.self, from: try await send(.GET, "/v1/faults")).faults
    }

    public func get(_ id: String) async throws -> FaultObject {
        try decode(FaultObject.self, from: try await send(.GET, "/v1/faults/\(try Self.pathSegment(id))"))
    }

    /// With `idempotencyKey`, retrying the same request (say, after a timeout) never injects twice.
    public func inject(_ request: FaultRequest, idempotencyKey: String? = nil) async throws -> FaultObject {
        let body = try WireCoding.encoder().encode(request)
        var headers = HTTPHeaders()
        if let idempotencyKey { headers.add(name: "Idempotency-Key", value: idempotencyKey) }
        return try decode(FaultObject.self, from: try await send(.POST, "/v1/faults", body: body, headers: headers))
    }

    /// Keeps a heartbeat fault alive for another interval.
    public func heartbeat(_ id: String) async throws -> FaultObject {
        try decode(
            FaultObject.self, from: try await send(.POST, "/v1/faults/\(try Self.pathSegment(id))/heartbeat", body: Data("{}".utf8)))
    }

    public func renew(_ id: String, ttl: String) async throws -> FaultObject {
        let body = try WireCoding.encoder().encode(RenewRequest(ttl: ttl))
        return try decode(
            FaultObject.self, from: try await send(.POST, "/v1/faults/\(try Self.pathSegment(id))/renew", body: body))
    }

    public func revert(_ id: String) async throws -> FaultObject {
        try decode(FaultObject.self, from: try await send(.DELETE, "/v1/faults/\(try Self.pathSegment(id))"))
    }

    public func revertAll() async throws -> [FaultObject] {
        try decode(RevertAllResult.self, from: try await send(.DELETE, "/v1/faults")).reverted
    }

    /// Follows `GET /v1/events`. With `lastEventID`, the agent first replays the buffered events after it.
    /// The stream ends when the agent closes the connection, and throws if the connection fails.
    /// Cancelling the consuming task (or dropping the stream) closes the connection.
    public func events(lastEventID: UInt64? = nil) -> AsyncThrowingStream<FaultEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream<FaultEvent, any Error>.makeStream()
        let task = Task {
            do {
                var headers = HTTPHeaders()
                headers.add(name: "Accept", value: "text/event-stream")
                if let lastEventID { headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
                let response = try await execute(.GET, "/v1/events", headers: headers, body: nil)
                guard response.status == .ok else {
                    let body = try await collect(response)
                    throw Self.httpError(status: response.status, body: body)
                }
                let contentType = response.headers.first(name: "content-type") ?? ""
                guard contentType.lowercased().hasPrefix("text/event-stream") else {
                    throw AgentClientError.protocolError("/v1/events answered \(contentType.isEmpty ? "no content type" : contentType), not text/event-stream")
                }
                var parser = ServerSentEventParser()
                let decoder = WireCoding.decoder()
                for try await chunk in response.body {
                    for message in parser.feed(chunk.readableBytesView) {
                        let event: FaultEvent
                        do {
                            event = try decoder.decode(FaultEvent.self, from: Data(message.data.utf8))
                        } catch {
                            throw AgentClientError.protocolError("undecodable event \(message.id ?? "?"): \(error)")
                        }
                        continuation.yield(event)
                    }
                }
                continuation.finish()
            } catch is CancellationError {
                continuation.finish()
            } catch {
                continuation.finish(throwing: mapError(error))
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: - Transport

    private static func pathSegment(_ id: String) throws -> String {
        guard !id.isEmpty, let escaped = id.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#")))
        else { throw AgentClientError.protocolError("not a fault id: '\(id)'") }
        return escaped
    }

    private func execute(
        _ method: HTTPMethod, _ uri: String, headers: HTTPHeaders, body: Data?
    ) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: try endpoint.url(for: uri))
        request.method = method
        request.headers = headers
        request.headers.add(name: "User-Agent", value: "chaos-agentctl")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            return try await http.execute(request, timeout: endpoint.requestTimeout)
        } catch {
            throw mapError(error)
        }
    }

    /// One request whose answer is JSON; error statuses are thrown as `.http`.
    private func send(
        _ method: HTTPMethod, _ uri: String, body: Data? = nil, headers extra: HTTPHeaders = [:]
    ) async throws -> Data {
        var headers = extra
        headers.add(name: "Accept", value: "application/json")
        let response = try await execute(method, uri, headers: headers, body: body)
        let data = try await collect(response)
        guard (200..<300).contains(response.status.code) else {
            throw Self.httpError(status: response.status, body: data)
        }
        return data
    }

    private func collect(_ response: HTTPClientResponse) async throws -> Data {
        do {
            let buffer = try await response.body.collect(upTo: 64 * 1024 * 1024)
            return Data(buffer.readableBytesView)
        } catch {
            throw mapError(error)
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        do {
            return try WireCoding.decoder().decode(T.self, from: data)
        } catch {
            let snippet = String(decoding: data.prefix(200), as: UTF8.self)
            throw AgentClientError.protocolError("cannot decode \(T.self) (\(error)): \(snippet)")
        }
    }

    static func httpError(status: HTTPResponseStatus, body: Data) -> AgentClientError {
        if let decoded = try? WireCoding.decoder().decode(ErrorBody.self, from: body) {
            return .http(status: Int(status.code), decoded)
        }
        var text = String(decoding: body.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty { text = status.reasonPhrase }
        return .http(status: Int(status.code), ErrorBody(code: "http-\(status.code)", message: text))
    }

    /// Turns transport errors into `AgentClientError.unreachable` with a reason a person can act on.
    func mapError(_ error: any Error) -> any Error {
        if error is AgentClientError || error is CancellationError { return error }
        let path = endpoint.description
        if let io = error as? IOError {
            return AgentClientError.unreachable(path: path, reason: AgentClientError.connectReason(errno: io.errnoCode))
        }
        if let http = error as? HTTPClientError {
            switch http {
            case .connectTimeout: return AgentClientError.unreachable(path: path, reason: "connect timed out")
            case .remoteConnectionClosed:
                return AgentClientError.unreachable(path: path, reason: "the agent closed the connection")
            case .deadlineExceeded, .readTimeout:
                return AgentClientError.unreachable(path: path, reason: "no answer within \(endpoint.requestTimeout)")
            case .cancelled: return CancellationError()
            default: break
            }
        }
        if let channel = error as? ChannelError {
            switch channel {
            case .connectTimeout: return AgentClientError.unreachable(path: path, reason: "connect timed out")
            case .eof, .ioOnClosedChannel, .alreadyClosed, .outputClosed:
                return AgentClientError.unreachable(path: path, reason: "the agent closed the connection")
            default: break
            }
        }
        if let sockErr = error as? SocketAddressError {
            return AgentClientError.unreachable(path: path, reason: "\(sockErr)")
        }
        // NIOConnectionError (NIOPosix) and friends: dig the errno out of the description if there is one.
        let text = String(describing: error)
        for (code, marker) in [(ENOENT, "errno: 2)"), (ECONNREFUSED, "errno: 111)"), (EACCES, "errno: 13)")] {
            if text.contains(marker) {
                return AgentClientError.unreachable(path: path, reason: AgentClientError.connectReason(errno: code))
            }
        }
        return AgentClientError.unreachable(path: path, reason: text)
    }
}
