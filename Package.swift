// swift-tools-version:6.2
import PackageDescription

/// Settings every Breakwater target shares: Swift 6 mode (complete concurrency checking),
/// `any` spelled out for existentials, and warnings treated as errors for our own code only.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .treatAllWarnings(as: .error),
]

/// A dependency on another package that only the daemon, its tools and tests use: guarded by the `Daemon` trait,
/// so an app that depends on this package for `BreakwaterClient` with `traits: []` resolves none of them
/// (SwiftPM leaves out a package whose every use is behind a trait the depending package did not enable).
func daemonOnly(_ name: String, _ package: String) -> Target.Dependency {
    .product(name: name, package: package, condition: .when(traits: ["Daemon"]))
}

let nio: [Target.Dependency] = [
    daemonOnly("NIOCore", "swift-nio"),
    daemonOnly("NIOPosix", "swift-nio"),
]

let package = Package(
    name: "breakwater",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "BreakwaterClient", targets: ["BreakwaterClient"]),
        .library(name: "BreakwaterWire", targets: ["BreakwaterWire"]),
        .executable(name: "breakwaterd", targets: ["breakwaterd"]),
        .executable(name: "breakwater", targets: ["breakwater"]),
        .executable(name: "fake-provider", targets: ["fake-provider"]),
        .executable(name: "breakwater-bench", targets: ["breakwater-bench"]),
        .executable(name: "breakwater-journal-bench", targets: ["breakwater-journal-bench"]),
        // A private systemd-journald per test, and a reader for what landed in it.
        .library(name: "JournalTestKit", targets: ["JournalTestKit"]),
        // A real redis-server per test, on a Unix socket.
        .library(name: "RedisTestKit", targets: ["RedisTestKit"]),
    ],
    traits: [
        .trait(name: "Daemon", description: "The daemon, its CLI, benchmarks and tests, and their dependencies (on "
               + "by default). An app that only needs the client shim depends with `traits: []`."),
        .default(enabledTraits: ["Daemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // SHA-256 for agent credentials. The range keeps the 4.x that swift-nio-extras already resolves.
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        // C libraries. Swift cannot call variadic C functions, so each shim header wraps them in
        // typed `static inline` functions (the GRDBSQLite pattern).
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // No pkgConfig: hiredis.pc adds -D_FILE_OFFSET_BITS=64, which SwiftPM refuses; its headers are in /usr/include.
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        // unshare(2) for JournalTestKit: glibc declares it only under _GNU_SOURCE, which Swift's Glibc lacks.
        .systemLibrary(name: "CLinuxNamespace"),

        // The wire protocol: frames, messages, codec, limits. No dependencies at all.
        .target(name: "BreakwaterWire", swiftSettings: strict),
        // The shim apps link: plain POSIX sockets plus the wire codec.
        .target(name: "BreakwaterClient", dependencies: ["BreakwaterWire", "PosixThread"], swiftSettings: strict),
        // The one pthread_create: a joinable or detached thread running a closure, without Foundation.
        .target(name: "PosixThread", swiftSettings: strict),
        // Retry schedule, error classes, circuit breaker, GCRA limiter, retry budget: pure state machines over an
        // injected clock.
        .target(name: "Resilience", swiftSettings: strict),
        // Canonical request/response and provider adapters; pure, no I/O.
        .target(name: "Providers", swiftSettings: strict),
        // libcurl multi engine on its own thread.
        .target(name: "CurlTransport", dependencies: ["CCurl", "PosixThread"], swiftSettings: strict),
        // The cluster store (Redis through hiredis) on a thread of its own: leases of provider rate limits shared
        // across hosts, and the daemons' heartbeat.
        .target(
            name: "Fleet",
            dependencies: ["CHiredis", "PosixThread", "Resilience", "Governance", daemonOnly("Crypto", "swift-crypto")],
            swiftSettings: strict
        ),
        // sd_listen_fds, sd_notify, and the audit trail written with sd_journal_sendv.
        .target(name: "Systemd", dependencies: ["CSystemd", "PosixThread"], swiftSettings: strict),
        // A private systemd-journald in its own mount namespace, for tests and the journal benchmark.
        .target(name: "JournalTestKit", dependencies: ["CLinuxNamespace", "PosixThread"], swiftSettings: strict),
        // A real redis-server (Debian's package) on a Unix socket in a temporary directory, stopped by PID.
        .target(name: "RedisTestKit", swiftSettings: strict),
        // Agent identity, scopes, tenants, conditional controls, approvals and budgets: pure decisions over an
        // injected clock.
        .target(
            name: "Governance",
            dependencies: ["Resilience", daemonOnly("Crypto", "swift-crypto")],
            swiftSettings: strict
        ),
        // YAML config and policy files with file:line errors.
        .target(
            name: "Config",
            dependencies: ["Resilience", "Governance", "Fleet", daemonOnly("Yams", "Yams")],
            swiftSettings: strict
        ),
        // The daemon's request path and server, as a library so tests can drive it in-process too.
        .target(
            name: "BreakwaterDaemon",
            dependencies: nio + [
                "BreakwaterWire", "Providers", "CurlTransport", "Systemd", "Config", "Resilience", "Governance",
                "Fleet",
                daemonOnly("NIOExtras", "swift-nio-extras"),
                daemonOnly("NIOHTTP1", "swift-nio"),
                daemonOnly("Prometheus", "swift-prometheus"),
                daemonOnly("ServiceLifecycle", "swift-service-lifecycle"),
                daemonOnly("Logging", "swift-log"),
                daemonOnly("GRDB", "GRDB.swift"),
                daemonOnly("UnixSignals", "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "breakwaterd",
            dependencies: [
                "BreakwaterDaemon", "Config", "Systemd", "Governance",
                daemonOnly("ArgumentParser", "swift-argument-parser"),
                daemonOnly("ServiceLifecycle", "swift-service-lifecycle"),
                daemonOnly("UnixSignals", "swift-service-lifecycle"),
                daemonOnly("NIOPosix", "swift-nio"),
                daemonOnly("Logging", "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The stand-in for the internet: each provider's real wire format, with scripted faults.
        .target(
            name: "FakeProviderKit",
            dependencies: nio + [daemonOnly("NIOHTTP1", "swift-nio")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "fake-provider",
            dependencies: [
                "FakeProviderKit",
                daemonOnly("ArgumentParser", "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "breakwater",
            dependencies: [
                // Config and Governance for `breakwater config check`: the daemon's own loaders, run locally.
                "BreakwaterClient", "Config", "Governance",
                daemonOnly("ArgumentParser", "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "breakwater-bench",
            dependencies: [
                // Governance for `--policy`: the token digest the generated policy holds. JournalTestKit: a
                // private journald for `--cost`'s governed runs. RedisTestKit: the redis-server of `--cost --cluster`.
                "BreakwaterClient", "CurlTransport", "Governance", "JournalTestKit", "RedisTestKit",
                // Providers and Resilience for `--parsers`: the answer parsers timed alone.
                "Providers", "Resilience",
                daemonOnly("Histogram", "hdrhistogram-swift"),
                daemonOnly("ArgumentParser", "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        // How many audit entries a second the writer gets into a real journald.
        .executableTarget(
            name: "breakwater-journal-bench",
            dependencies: [
                "Systemd", "JournalTestKit",
                daemonOnly("ArgumentParser", "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        .testTarget(name: "BreakwaterWireTests", dependencies: ["BreakwaterWire"], swiftSettings: strict),
        .testTarget(name: "SystemdTests", dependencies: ["Systemd", "JournalTestKit"], swiftSettings: strict),
        .testTarget(name: "ProvidersTests", dependencies: ["Providers"], swiftSettings: strict),
        .testTarget(name: "ResilienceTests", dependencies: ["Resilience"], swiftSettings: strict),
        // Against a real redis-server (Debian's package), started on a Unix socket per test.
        .testTarget(name: "FleetTests", dependencies: ["Fleet", "RedisTestKit", "Resilience", "Governance"], swiftSettings: strict),
        // The daemon's call path in-process: EmbeddedChannel, a scripted engine, virtual time.
        .testTarget(
            name: "BreakwaterDaemonTests",
            dependencies: [
                "BreakwaterDaemon", "BreakwaterWire", "Config", "CurlTransport", "Resilience",
                daemonOnly("NIOCore", "swift-nio"),
                daemonOnly("NIOEmbedded", "swift-nio"),
                daemonOnly("NIOHTTP1", "swift-nio"),
                daemonOnly("Logging", "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(name: "FakeProviderKitTests", dependencies: ["FakeProviderKit"], swiftSettings: strict),
        .testTarget(name: "GovernanceTests", dependencies: ["Governance", "Resilience"], swiftSettings: strict),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "Governance", "Resilience"], swiftSettings: strict),
        .testTarget(
            name: "CurlTransportTests",
            dependencies: ["CurlTransport", "FakeProviderKit"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "BreakwaterClient", "BreakwaterWire", "FakeProviderKit", "Governance", "JournalTestKit",
                "RedisTestKit",
                // To read the daemon's state store (wait for a write before a crash).
                daemonOnly("GRDB", "GRDB.swift"),
                // Listed so `swift test` builds the binaries the end-to-end tests start as real processes.
                "breakwaterd", "fake-provider", "breakwater",
            ],
            swiftSettings: strict
        ),
    ]
)
