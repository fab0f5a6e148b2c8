// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "progsync",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "progsyncd", targets: ["progsyncd"]),
        .executable(name: "progsync", targets: ["progsync"]),
        .library(name: "ProgSyncCore", targets: ["ProgSyncCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: [.defaults, "YAML"]),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        // libcurl, the only HTTP client: variadic setopt/getinfo wrapped in shim.h.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        // zlib, for compressed bundles (a dependency of libcurl, so already on every node).
        .systemLibrary(
            name: "CZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // glibc's malloc.h (mallopt, malloc_trim), which the Glibc module leaves out.
        .systemLibrary(name: "CMalloc"),
        // Pure core: clock, ids, records, commits, signing, merge rule, digest. No I/O.
        .target(
            name: "ProgSyncCore",
            dependencies: ["CZlib", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // The replica's persistence: SQLite through GRDB.
        .target(
            name: "ProgSyncStore",
            dependencies: [
                "ProgSyncCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Small async wrapper over libcurl (Unix sockets, TLS, caps, timeouts).
        .target(
            name: "ProgSyncHTTPClient",
            dependencies: ["CCurl"],
            swiftSettings: swiftSettings
        ),
        // The daemon: services, local API, configuration.
        .target(
            name: "ProgSyncDaemon",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore", "ProgSyncWeb",
                "ProgSyncHTTPClient", "CMalloc",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            resources: [.copy("Resources/programme-2021.json")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "progsyncd",
            dependencies: [
                "ProgSyncDaemon", "ProgSyncBuildInfo", "CMalloc",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The version and git commit for `--version`, stamped before each build by the plugin below.
        .target(
            name: "ProgSyncBuildInfo",
            swiftSettings: swiftSettings,
            plugins: ["BuildStamp"]
        ),
        .plugin(name: "BuildStamp", capability: .buildTool()),
        // The programme report (tree, counts, Markdown/HTML rendering), shared by the CLI and the web app.
        .target(
            name: "ProgSyncReport",
            dependencies: ["ProgSyncCore"],
            swiftSettings: swiftSettings
        ),
        // The web app for programme officers: pages, sessions, live updates; served by the daemon.
        .target(
            name: "ProgSyncWeb",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore", "ProgSyncReport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "HummingbirdOTP", package: "hummingbird-auth"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
            ],
            resources: [.copy("Resources/templates"), .copy("Resources/static")],
            swiftSettings: swiftSettings
        ),
        // The CLI: commands and pure logic (CSV, field values, tables); testable.
        .target(
            name: "ProgSyncCLI",
            dependencies: [
                "ProgSyncCore", "ProgSyncReport", "ProgSyncHTTPClient", "ProgSyncBuildInfo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "progsync",
            dependencies: ["ProgSyncCLI"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ProgSyncBench",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ],
            path: "Benchmarks/ProgSyncBench",
            swiftSettings: swiftSettings
        ),
        // The programme as of a date over 100k activities, next to listing their current state.
        .executableTarget(
            name: "ProgSyncAsOfBench",
            dependencies: ["ProgSyncCore", "ProgSyncStore"],
            path: "Benchmarks/AsOfBench",
            swiftSettings: swiftSettings
        ),
        // The web app's render times: the 2021 overview and pages of 100k activities.
        .executableTarget(
            name: "ProgSyncWebBench",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore", "ProgSyncDaemon", "ProgSyncHTTPClient", "ProgSyncBenchSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/WebBench",
            swiftSettings: swiftSettings
        ),
        // Applies one large batch so the crash test can kill it mid-transaction.
        .executableTarget(
            name: "progsync-crash-writer",
            dependencies: ["ProgSyncCore", "ProgSyncStore", .product(name: "Crypto", package: "swift-crypto")],
            path: "Tests/CrashWriter",
            swiftSettings: swiftSettings
        ),
        // The local API benchmark: load over the socket next to nginx on a socket.
        .executableTarget(
            name: "ProgSyncLocalAPIBench",
            dependencies: ["ProgSyncCore", "ProgSyncBenchSupport"],
            path: "Benchmarks/LocalAPIBench",
            swiftSettings: swiftSettings
        ),
        // Partner sync benchmark: initial sync over TLS, propagation latency and reconciliation between real nodes.
        // What the benchmarks that start progsyncd processes share.
        .target(name: "ProgSyncBenchSupport", path: "Benchmarks/Support", swiftSettings: swiftSettings),
        .executableTarget(
            name: "ProgSyncSyncBench",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore", "ProgSyncHTTPClient", "ProgSyncBenchSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Benchmarks/SyncBench",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProgSyncDaemonTests",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore", "ProgSyncDaemon", "ProgSyncHTTPClient", "ProgSyncWeb",
                .product(name: "HummingbirdOTP", package: "hummingbird-auth"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProgSyncPeerTests",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore", "ProgSyncDaemon", "ProgSyncHTTPClient",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProgSyncCLITests",
            dependencies: ["ProgSyncCLI", "ProgSyncCore", "ProgSyncReport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProgSyncCoreTests",
            dependencies: ["ProgSyncCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProgSyncHTTPClientTests",
            dependencies: ["ProgSyncHTTPClient"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProgSyncStoreTests",
            dependencies: [
                "ProgSyncCore", "ProgSyncStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
