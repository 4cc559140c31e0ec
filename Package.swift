// swift-tools-version:6.0
//
// relayd — an SMTP relay daemon that enforces a per-destination TLS policy.
//
// One SwiftPM target per role, so the layering in ARCHITECTURE.md is held
// by the compiler rather than by review: a target can use only what it
// names below, and `make test` builds with
// `--explicit-target-dependency-import-check error`, so an import the graph
// does not allow fails the build. The roles live under Sources/RelayCore/
// as folders, each its own module (RelayModel, RelaySMTP, …); the C shims
// sit beside them (COpenSSL over OpenSSL 3, CAres over c-ares 1.18, CCrypt
// over libxcrypt, CZlib over zlib, CLibPQ over libpq, CSyncFS over syncfs(2)),
// each imported by exactly one role.
//
// `RelayCore` is the top layer itself (the server wiring, Server/) and
// re-exports the layers below it, so the executable and anyone embedding
// relayd import one module. Not a separate empty umbrella: the top layer
// already depends on every role, and a target holding only re-exports
// would be one more name with nothing to own.
//
// Swift 6 language mode everywhere (the package default for tools 6.0):
// data-race safety is checked in every target. See ARCHITECTURE.md for the
// few `@unchecked Sendable` classes and the queue each is confined to.
import PackageDescription

let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .unsafeFlags(["-warnings-as-errors"], .when(configuration: .debug)),
]

let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let coreMetrics = Target.Dependency.product(name: "CoreMetrics", package: "swift-metrics")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")

/// A role under Sources/RelayCore/<folder>.
func role(_ name: String, _ folder: String, _ dependencies: [Target.Dependency]) -> Target {
    .target(name: name, dependencies: dependencies, path: "Sources/RelayCore/\(folder)", swiftSettings: settings)
}

/// The unit tests of one role, under Tests/<name>.
func tests(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .testTarget(name: name, dependencies: dependencies + ["RelayTestSupport", logging], swiftSettings: settings)
}

let package = Package(
    name: "relayd",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "relayd", targets: ["relayd"]),
        .library(name: "RelayCore", targets: ["RelayCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // C shims over system libraries.
        .target(name: "COpenSSL", path: "Sources/COpenSSL", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(name: "CAres", path: "Sources/CAres", linkerSettings: [.linkedLibrary("cares")]),
        .target(name: "CSyncFS", path: "Sources/CSyncFS"),
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ"),

        // Pure: values and protocol machines, no I/O.
        role("RelayModel", "Model", []),
        role("RelaySMTP", "SMTP", ["RelayModel"]),
        role("RelayPolicy", "Policy", ["RelayModel", "RelaySMTP", "RelaySTS"]),
        role("RelayLog", "Log", [logging]),
        role("RelaySync", "Sync", []),
        role("RelaySTS", "STS", ["RelayModel"]),
        role("RelayMetrics", "Metrics", ["RelayModel", coreMetrics, prometheus]),

        // One system library each.
        role("RelayTLS", "TLS", ["RelayModel", "COpenSSL"]),
        role("RelayDNS", "DNS", ["RelayModel", "CAres"]),
        role("RelayAuth", "Auth", ["RelayModel", "RelaySync", "CCrypt"]),
        // Shared state's foundation: the PostgreSQL client, pool and migrations.
        role("RelayPostgres", "Postgres", ["RelayModel", "RelaySync", "CLibPQ", logging]),

        // Files, sockets and the configuration.
        role("RelayQueue", "Queue", ["RelayModel", "RelaySMTP", "RelaySync", "CSyncFS"]),
        role("RelayIO", "IO", ["RelayModel", "RelaySync", "RelayTLS"]),
        role("RelayHTTPS", "HTTPS", ["RelayModel", "RelayTLS", "RelayIO", "RelayDNS", "RelaySync"]),
        role("RelayMTASTS", "MTASTS", ["RelayModel", "RelaySTS", "RelayPolicy", "RelayDNS", "RelayHTTPS", "RelayQueue",
                                       "RelaySync", logging]),
        role("RelayLearned", "Learned", ["RelayModel", "RelayPolicy", "RelayQueue", "RelaySync", logging]),
        role("RelayTLSRPT", "TLSRPT", ["RelayModel", "RelayQueue", "RelaySync", "RelayDNS", "RelayHTTPS", "CZlib",
                                       logging]),
        role("RelayConfig", "Config", ["RelayModel", "RelayPolicy", "RelayTLS", "RelayAuth", logging,
                                       .product(name: "TOMLKit", package: "TOMLKit")]),

        // Outbound, then the server on top.
        role("RelayDelivery", "Delivery", ["RelayModel", "RelaySMTP", "RelayPolicy", "RelayTLS", "RelayDNS",
                                           "RelayIO", "RelayQueue", "RelayConfig", "RelaySync", "RelaySTS",
                                           "RelayHTTPS", "RelayMTASTS", "RelayLearned", "RelayTLSRPT", "RelayMetrics", logging]),
        role("RelayCore", "Server", ["RelayModel", "RelaySMTP", "RelayPolicy", "RelayLog", "RelayTLS", "RelayDNS",
                                     "RelayAuth", "RelayQueue", "RelayIO", "RelayConfig", "RelayDelivery", "RelaySync",
                                     "RelaySTS", "RelayHTTPS", "RelayMTASTS", "RelayLearned", "RelayTLSRPT", "RelayMetrics",
                                     "RelayPostgres", logging]),

        .executableTarget(
            name: "relayd",
            dependencies: ["RelayCore", "RelaySync", .product(name: "ArgumentParser", package: "swift-argument-parser"), logging],
            swiftSettings: settings
        ),

        // Tests: one target per role, named after it, and shared helpers.
        .target(name: "RelayTestSupport",
                dependencies: ["RelayModel", "RelaySMTP", "RelayPolicy", "RelayLog", "RelayTLS", "RelayDNS", "RelayAuth",
                               "RelayIO", "RelayQueue", "RelayConfig", "RelayDelivery", "RelayCore", "RelayMetrics", "RelayPostgres",
                               logging],
                path: "Tests/RelayTestSupport", exclude: ["Fixtures"], swiftSettings: settings),
        tests("RelaySMTPTests", ["RelayModel", "RelaySMTP"]),
        tests("RelayTLSTests", ["RelayModel", "RelayTLS"]),
        tests("RelayDNSTests", ["RelayModel", "RelayDNS"]),
        tests("RelayAuthTests", ["RelayModel", "RelayAuth"]),
        tests("RelayQueueTests", ["RelayModel", "RelaySMTP", "RelayLog", "RelayAuth", "RelayQueue", "RelayCore"]),
        tests("RelayIOTests", ["RelayModel", "RelayTLS", "RelayIO"]),
        tests("RelayHTTPSTests", ["RelayModel", "RelayTLS", "RelayDNS", "RelayIO", "RelayHTTPS"]),
        tests("RelayConfigTests", ["RelayModel", "RelayPolicy", "RelayTLS", "RelayAuth", "RelayDNS", "RelayConfig",
                        "RelayDelivery"]),
        tests("RelayPolicyTests", ["RelayModel", "RelaySMTP", "RelayPolicy", "RelayTLS", "RelayDNS", "RelayQueue",
                        "RelayConfig", "RelayDelivery"]),
        tests("RelayDeliveryTests", ["RelayModel", "RelaySMTP", "RelayPolicy", "RelayLog", "RelayTLS", "RelayDNS",
                        "RelayIO", "RelayQueue", "RelayConfig", "RelayDelivery", "RelaySTS", "RelayMTASTS", "RelayTLSRPT",
                        "RelayMetrics"]),
        tests("RelaySTSTests", ["RelayModel", "RelaySTS"]),
        tests("RelayMetricsTests", ["RelayModel", "RelayMetrics"]),
        tests("RelayMTASTSTests", ["RelayModel", "RelaySTS", "RelayPolicy", "RelayDNS", "RelayHTTPS", "RelayQueue",
                                   "RelaySync", "RelayMTASTS"]),
        tests("RelayTLSRPTTests", ["RelayModel", "RelayQueue", "RelaySync", "RelayDNS", "RelayHTTPS", "RelayTLS",
                                   "RelayTLSRPT"]),
        tests("RelayPostgresTests", ["RelayModel", "RelaySync", "RelayPostgres"]),
        tests("RelayLearnedTests", ["RelayModel", "RelayPolicy", "RelayQueue", "RelaySync", "RelayLearned"]),
        tests("RelayCoreTests", ["RelayModel", "RelaySMTP", "RelayPolicy", "RelayLog", "RelayTLS", "RelayDNS",
                        "RelayAuth", "RelayIO", "RelayQueue", "RelayConfig", "RelayDelivery", "RelayCore", "RelayMetrics",
                        "RelayTLSRPT", "RelayPostgres", "RelayLearned", "RelaySync"]),
    ]
)
