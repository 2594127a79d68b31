import Foundation
import Testing

@testable import SystemdNotify

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A datagram socket standing in for systemd's notification socket.
private final class FakeNotifySocket {
    let fd: Int32
    /// The value to put in NOTIFY_SOCKET.
    let notifySocket: String
    private let unlinkPath: String?

    /// Binds in the file system, in a fresh temporary directory.
    init() throws {
        let dir = try TemporaryDirectory()
        let path = dir.url.appendingPathComponent("notify").path
        fd = try Self.boundSocket(bytes: Array(path.utf8), abstract: false)
        notifySocket = path
        unlinkPath = path
        dir.keep()  // removed in deinit, after the socket file
    }

    /// Binds in the abstract namespace under `name` (no leading NUL, no '@').
    init(abstract name: String) throws {
        fd = try Self.boundSocket(bytes: Array(name.utf8), abstract: true)
        notifySocket = "@" + name
        unlinkPath = nil
    }

    deinit {
        close(fd)
        if let unlinkPath {
            unlink(unlinkPath)
            rmdir((unlinkPath as NSString).deletingLastPathComponent)
        }
    }

    /// The next datagram as text; fails the test after 5 s.
    func receive() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { throw POSIXError(errno: errno, "recv") }
        return String(decoding: buffer[..<n], as: UTF8.self)
    }

    /// Whether a datagram is waiting (without consuming it).
    func hasPending() -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n >= 0
    }

    private static func boundSocket(bytes: [UInt8], abstract: Bool) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(errno: errno, "socket") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let full = abstract ? [0] + bytes : bytes
        precondition(full.count <= MemoryLayout.size(ofValue: address.sun_path))
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: full) }
        // Abstract names are length-delimited: exactly the bytes, no trailing NUL.
        let length = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + full.count + (abstract ? 0 : 1)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(length)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw POSIXError(errno: e, "bind")
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }
}

private struct POSIXError: Error, CustomStringConvertible {
    var errno: Int32
    var call: String
    init(errno: Int32, _ call: String) {
        self.errno = errno
        self.call = call
    }
    var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

private final class TemporaryDirectory {
    let url: URL
    private var removeOnDeinit = true

    init() throws {
        // Short, so that socket paths stay well under sun_path's 108 bytes.
        url = URL(fileURLWithPath: "/tmp/sdn-\(UUID().uuidString.prefix(8))", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
    }

    func keep() { removeOnDeinit = false }

    deinit {
        if removeOnDeinit { try? FileManager.default.removeItem(at: url) }
    }
}

private func uniqueAbstractName() -> String {
    "chaos-agent-test-\(getpid())-\(UUID().uuidString)"
}

@Suite("sd_notify protocol", .serialized, .timeLimit(.minutes(1)))
struct NotifyProtocolTests {
    @Test("a file-system NOTIFY_SOCKET receives exactly the protocol text")
    func fileSystemSocket() throws {
        let fake = try FakeNotifySocket()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": fake.notifySocket])
        #expect(notifier.isEnabled)
        #expect(notifier.destination == .path(fake.notifySocket))

        #expect(notifier.ready(status: "reconciled 2 faults; serving"))
        #expect(try fake.receive() == "READY=1\nSTATUS=reconciled 2 faults; serving")

        #expect(notifier.ready())
        #expect(try fake.receive() == "READY=1")

        #expect(notifier.watchdog())
        #expect(try fake.receive() == "WATCHDOG=1")

        #expect(notifier.status("3 active faults"))
        #expect(try fake.receive() == "STATUS=3 active faults")

        #expect(notifier.stopping())
        #expect(try fake.receive() == "STOPPING=1")

        #expect(notifier.stopping(status: "reverting 3 faults"))
        #expect(try fake.receive() == "STOPPING=1\nSTATUS=reverting 3 faults")

        #expect(notifier.extendTimeout(by: .seconds(90)))
        #expect(try fake.receive() == "EXTEND_TIMEOUT_USEC=90000000")

        #expect(notifier.extendTimeout(by: .seconds(Int64.max)))
        #expect(try fake.receive().hasPrefix("EXTEND_TIMEOUT_USEC="))
        #expect(!notifier.extendTimeout(by: .seconds(-1)))

        #expect(notifier.send("FDSTORE=0\nCUSTOM=x"))
        #expect(try fake.receive() == "FDSTORE=0\nCUSTOM=x")

        #expect(!fake.hasPending())
    }

    @Test("RELOADING=1 carries MONOTONIC_USEC")
    func reloading() throws {
        let fake = try FakeNotifySocket()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": fake.notifySocket])
        #expect(notifier.reloading())
        let lines = try fake.receive().split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 2)
        #expect(lines.first == "RELOADING=1")
        let usec = lines.last.flatMap { $0.hasPrefix("MONOTONIC_USEC=") ? UInt64($0.dropFirst(15)) : nil }
        #expect(usec != nil && usec! > 0)
    }

    @Test("a newline in STATUS cannot inject another assignment")
    func statusIsOneLine() throws {
        let fake = try FakeNotifySocket()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": fake.notifySocket])
        #expect(notifier.status("line one\nREADY=1\r\nthree"))
        #expect(try fake.receive() == "STATUS=line one READY=1 three")
    }

    @Test("an abstract NOTIFY_SOCKET ('@name') is reached without a trailing NUL in the address")
    func abstractSocket() throws {
        let name = uniqueAbstractName()
        let fake = try FakeNotifySocket(abstract: name)
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name])
        #expect(notifier.destination == .abstract(name))
        #expect(notifier.ready(status: "abstract"))
        #expect(try fake.receive() == "READY=1\nSTATUS=abstract")
        #expect(notifier.watchdog())
        #expect(try fake.receive() == "WATCHDOG=1")
    }

    @Test("the longest abstract name that fits (107 bytes) works")
    func longestAbstractName() throws {
        var name = uniqueAbstractName()
        name += String(repeating: "x", count: 107 - name.utf8.count)
        let fake = try FakeNotifySocket(abstract: name)
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name])
        #expect(notifier.watchdog())
        #expect(try fake.receive() == "WATCHDOG=1")
    }

    @Test("address lengths: path includes its NUL, abstract does not")
    func addressLengths() throws {
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        let path = try #require(SystemdNotifier.socketAddress(for: .path("/run/systemd/notify")))
        #expect(Int(path.1) == offset + "/run/systemd/notify".utf8.count + 1)
        let abstract = try #require(SystemdNotifier.socketAddress(for: .abstract("org/systemd/notify")))
        #expect(Int(abstract.1) == offset + 1 + "org/systemd/notify".utf8.count)
    }

    @Test("no NOTIFY_SOCKET: every call is a no-op returning false")
    func noSocket() {
        let notifier = SystemdNotifier(environment: [:])
        #expect(!notifier.isEnabled)
        #expect(notifier.destination == nil)
        #expect(!notifier.ready(status: "x"))
        #expect(!notifier.ready())
        #expect(!notifier.stopping())
        #expect(!notifier.reloading())
        #expect(!notifier.status("x"))
        #expect(!notifier.watchdog())
        #expect(!notifier.extendTimeout(by: .seconds(1)))
        #expect(!notifier.send("READY=1"))
        #expect(notifier.watchdogInterval == nil)
    }

    @Test(
        "unusable NOTIFY_SOCKET values disable the notifier",
        arguments: ["", "relative/path", "@", "vsock:2:1234", "notify"])
    func unusableSocketValues(value: String) {
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": value])
        #expect(!notifier.isEnabled)
        #expect(!notifier.ready())
    }

    @Test("a path or abstract name too long for sun_path fails cleanly")
    func tooLong() {
        let longPath = "/tmp/" + String(repeating: "p", count: 200)
        let pathNotifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": longPath])
        #expect(pathNotifier.isEnabled)
        #expect(!pathNotifier.ready())
        #expect(SystemdNotifier.socketAddress(for: .path(longPath)) == nil)

        // 108 bytes would leave no room for the NUL that ends a file-system path.
        let exactly108 = "/" + String(repeating: "q", count: 107)
        #expect(SystemdNotifier.socketAddress(for: .path(exactly108)) == nil)

        // Abstract: the leading NUL plus 108 bytes is one too many.
        let longName = String(repeating: "a", count: 108)
        let abstractNotifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + longName])
        #expect(!abstractNotifier.watchdog())
        #expect(SystemdNotifier.socketAddress(for: .abstract(longName)) == nil)
    }

    @Test("nobody listening: send returns false")
    func nobodyListening() throws {
        let dir = try TemporaryDirectory()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": dir.url.appendingPathComponent("absent").path])
        #expect(!notifier.ready())
        let abstract = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + uniqueAbstractName()])
        #expect(!abstract.ready())
    }

    @Test("the notifier can be shared across tasks")
    func concurrentSends() async throws {
        let fake = try FakeNotifySocket()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": fake.notifySocket])
        // Fewer than net.unix.max_dgram_qlen (default 10): nobody drains the fake until all sends are done.
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 { group.addTask { notifier.watchdog() } }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0 })
        for _ in 0..<8 { #expect(try fake.receive() == "WATCHDOG=1") }
    }
}

@Suite("watchdog environment")
struct WatchdogTests {
    private let me = getpid()

    @Test("WATCHDOG_USEC without WATCHDOG_PID is ours")
    func usecOnly() {
        let n = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000"])
        #expect(n.watchdogInterval == .seconds(30))
        #expect(n.watchdogPingInterval == .seconds(15))
    }

    @Test("WATCHDOG_PID naming this process enables the watchdog")
    func ourPID() {
        let n = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(me)"])
        #expect(n.watchdogInterval == .seconds(30))
    }

    @Test("WATCHDOG_PID naming another process disables it (inherited variable)")
    func otherPID() {
        let n = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "\(me + 1)"])
        #expect(n.watchdogInterval == nil)
        #expect(n.watchdogPingInterval == nil)
        let explicit = SystemdNotifier(environment: ["WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "42"], pid: 42)
        #expect(explicit.watchdogInterval == .seconds(5))
    }

    @Test("garbage WATCHDOG_PID disables it", arguments: ["", "abc", "12x", " 1", "-1"])
    func garbagePID(pid: String) {
        let n = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid])
        #expect(n.watchdogInterval == nil)
    }

    @Test(
        "absent, zero or garbage WATCHDOG_USEC disables it",
        arguments: [nil, "", "0", "-5", "abc", "30s", " 30000000", "1e6", "99999999999999999999999"] as [String?])
    func garbageUSec(usec: String?) {
        var env = ["WATCHDOG_PID": "\(me)"]
        env["WATCHDOG_USEC"] = usec
        #expect(SystemdNotifier(environment: env).watchdogInterval == nil)
    }

    @Test("sub-second intervals keep microsecond precision")
    func precision() {
        let n = SystemdNotifier(environment: ["WATCHDOG_USEC": "1500001"])
        #expect(n.watchdogInterval == .microseconds(1_500_001))
        #expect(n.watchdogPingInterval == .microseconds(750_000))
    }
}

// MARK: - The unit file

/// The repository root, found from this source file so the test works from any checkout.
private let repositoryRoot = URL(fileURLWithPath: #filePath)
    .resolvingSymlinksInPath()
    .deletingLastPathComponent()  // SystemdNotifyTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()

private let systemdAnalyze: String? = [
    "/usr/bin/systemd-analyze", "/bin/systemd-analyze", "/usr/local/bin/systemd-analyze",
]
.first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite("systemd unit")
struct UnitFileTests {
    static let unitURL = repositoryRoot.appendingPathComponent("systemd/chaos-agent.service")

    @Test(
        "systemd-analyze verify accepts systemd/chaos-agent.service without warnings",
        .enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed (apt install systemd)"),
        .timeLimit(.minutes(1)))
    func verify() throws {
        let text = try String(contentsOf: Self.unitURL, encoding: .utf8)
        #expect(text.contains("ExecStart=/usr/local/bin/chaos-agentd "))
        #expect(text.contains("ExecStopPost=/usr/local/bin/chaos-agentd "))

        // verify insists that ExecStart= binaries exist: point them at a stand-in.
        let dir = try TemporaryDirectory()
        let fakeDaemon = dir.url.appendingPathComponent("chaos-agentd")
        try "#!/bin/sh\nexit 0\n".write(to: fakeDaemon, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fakeDaemon.path)
        let unit = dir.url.appendingPathComponent("chaos-agent.service")
        try text.replacingOccurrences(of: "/usr/local/bin/chaos-agentd", with: fakeDaemon.path)
            .write(to: unit, atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: systemdAnalyze!)
        process.arguments = ["verify", unit.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()

        // Other units on this machine may draw complaints; only ours matter.
        let ours = output.split(separator: "\n").filter {
            $0.contains("chaos-agent") || $0.contains(dir.url.path)
        }
        #expect(process.terminationStatus == 0, "systemd-analyze verify failed:\n\(output)")
        #expect(ours.isEmpty, "systemd-analyze verify complained about the unit:\n\(ours.joined(separator: "\n"))")
    }

    @Test("the unit keeps the settings the daemon and docs rely on")
    func settings() throws {
        let text = try String(contentsOf: Self.unitURL, encoding: .utf8)
        let lines = Set(text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) })
        for required in [
            "Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=on-failure",
            "RuntimeDirectory=chaos-agent", "RuntimeDirectoryPreserve=yes", "Delegate=yes", "KillMode=mixed",
            "ExecStopPost=/usr/local/bin/chaos-agentd reap --state-dir /run/chaos-agent",
            "ExecStart=/usr/local/bin/chaos-agentd run --config /etc/chaos-agent/agent.toml",
        ] {
            #expect(lines.contains(required), "missing \(required)")
        }
        for forbidden in [
            "PrivateNetwork=yes", "ProtectKernelTunables=yes", "ProtectControlGroups=yes",
            "RestrictNamespaces=yes",
        ] {
            #expect(!lines.contains(forbidden), "\(forbidden) would stop the agent doing its job")
        }
    }
}
