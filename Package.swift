// swift-tools-version:6.0
import PackageDescription

let upcoming: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "chaos-agent",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "chaos-agentd", targets: ["chaos-agentd"]),
        .executable(name: "chaos-agentctl", targets: ["chaos-agentctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.0.0"),
    ],
    targets: [
        // System libraries and the few syscalls Glibc does not expose.
        .systemLibrary(name: "CMNL", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap", providers: [.apt(["libcap-dev"])]),
        .target(name: "CShims"),

        // OS layer: knows nothing about leases.
        .target(name: "Processes", dependencies: ["CShims"], swiftSettings: upcoming),
        .target(name: "SystemdNotify", swiftSettings: upcoming),
        // cgroup v2: interface files, the agent's own subtree, lease cgroups (mount injectable for tests).
        .target(name: "Cgroups", dependencies: ["CShims"], swiftSettings: upcoming),

        // rtnetlink over libmnl: links, qdiscs (netem, tbf, prio, clsact), filters (u32, flower, mirred), namespaces.
        .target(name: "Netlink", dependencies: ["CMNL", "CShims"], swiftSettings: upcoming),

        // Wire types shared by server and client.
        .target(name: "AgentAPI", swiftSettings: upcoming),

        // Lease engine, journal, policy, config, host capabilities: knows nothing about netlink or /proc.
        .target(
            name: "AgentCore",
            dependencies: [
                "AgentAPI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: upcoming),

        // One file per fault kind.
        .target(
            name: "Faults",
            dependencies: ["AgentCore", "AgentAPI", "Processes", "Cgroups", "Netlink", "CCap", "CMNL", "CShims", .product(name: "Logging", package: "swift-log")],
            swiftSettings: upcoming),

        // HTTP/1.1 + JSON over the Unix socket (SwiftNIO), peer-credential auth, routes.
        .target(
            name: "AgentServer",
            dependencies: [
                "AgentCore", "AgentAPI", "CShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: upcoming),

        // The daemon as a library (tests drive it in-process), then a thin executable.
        .target(
            name: "AgentDaemon",
            dependencies: [
                "AgentCore", "AgentServer", "Faults", "SystemdNotify", "Processes", "CShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming),
        .executableTarget(name: "chaos-agentd", dependencies: ["AgentDaemon"], swiftSettings: upcoming),

        // Client over the socket and the CLI as a testable library, then a thin executable.
        .target(
            name: "AgentClient",
            dependencies: [
                "AgentAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: upcoming),
        .target(
            name: "AgentCtlCommands",
            dependencies: [
                "AgentClient", "AgentAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: upcoming),
        .executableTarget(name: "chaos-agentctl", dependencies: ["AgentCtlCommands"], swiftSettings: upcoming),

        .testTarget(name: "AgentCoreTests", dependencies: ["AgentCore", "AgentAPI"], swiftSettings: upcoming),
        .testTarget(name: "ProcessesTests", dependencies: ["Processes"], swiftSettings: upcoming),
        .testTarget(name: "FaultsTests", dependencies: ["Faults", "AgentCore", "AgentAPI", "Processes", "Cgroups"], swiftSettings: upcoming),
        .testTarget(name: "CgroupsTests", dependencies: ["Cgroups"], swiftSettings: upcoming),
        .testTarget(
            name: "AgentServerTests",
            dependencies: [
                "AgentServer", "AgentCore", "AgentAPI", "Faults", "AgentCtlCommands",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: upcoming),
        .testTarget(name: "AgentDaemonTests", dependencies: ["AgentDaemon"], swiftSettings: upcoming),
        .testTarget(name: "SystemdNotifyTests", dependencies: ["SystemdNotify"], swiftSettings: upcoming),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "CMNL"], swiftSettings: upcoming),
    ]
)
