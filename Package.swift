// swift-tools-version:6.0
//
// relayd — an SMTP relay daemon that enforces a per-destination TLS policy.
//
// Layout (see ARCHITECTURE.md): two tiny C shims over system libraries
// (COpenSSL over OpenSSL 3, CAres over c-ares 1.18), the RelayCore library,
// and the relayd executable. The shims exist only for what Swift cannot
// import directly (function-like macros, stack accessors); everything else is
// called straight from Swift inside RelayCore/TLS and RelayCore/DNS, which are
// the only importers of the shims.
//
// Language mode 5: the I/O layer confines each connection to one serial
// DispatchQueue, a discipline Swift 6's checker cannot see without
// @unchecked annotations on every connection type. Protocol and policy code is
// value types and would compile under 6 unchanged; moving to 6 is tracked in
// the closing notes rather than papered over with annotations.
import PackageDescription

let sharedSwiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .unsafeFlags(["-warnings-as-errors"], .when(configuration: .debug)),
]

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
    ],
    targets: [
        .target(
            name: "COpenSSL",
            path: "Sources/COpenSSL",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        .target(
            name: "CAres",
            path: "Sources/CAres",
            linkerSettings: [.linkedLibrary("cares")]
        ),
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt"),
        .target(
            name: "RelayCore",
            dependencies: [
                "COpenSSL",
                "CAres",
                "CCrypt",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .executableTarget(
            name: "relayd",
            dependencies: [
                "RelayCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSwiftSettings
        ),
        .testTarget(
            name: "RelayCoreTests",
            dependencies: ["RelayCore"],
            exclude: ["Fixtures"],
            swiftSettings: sharedSwiftSettings
        ),
    ],
    swiftLanguageModes: [.v5]
)
