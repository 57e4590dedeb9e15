// swift-tools-version:6.2
// An app that uses Breakwater's Swift client shim. It depends on the breakwater package with no traits, so only
// BreakwaterClient, BreakwaterWire and PosixThread are resolved and built — none of the daemon's dependencies.
import PackageDescription

let package = Package(
    name: "swift-app",
    platforms: [.macOS(.v15)],
    dependencies: [
        // An app elsewhere: .package(url: "https://github.com/<owner>/breakwater.git", from: "…", traits: [])
        // (Here: the repository itself, through the symlink `breakwater` → ../.., whose name gives the package its
        // identity whatever the checkout directory is called.)
        .package(path: "breakwater", traits: []),
    ],
    targets: [
        .executableTarget(
            name: "swift-app",
            dependencies: [.product(name: "BreakwaterClient", package: "breakwater")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
