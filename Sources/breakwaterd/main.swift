import ArgumentParser
import BreakwaterDaemon
import Config
import Foundation
import Governance
import Logging
import NIOPosix
import ServiceLifecycle
import Systemd
import UnixSignals

/// `breakwaterd`: the host-local LLM sidecar daemon.
@main
struct BreakwaterDaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakwaterd",
        abstract: "Host-local sidecar that keeps LLM calls alive and in bounds."
    )

    @Option(name: .long, help: "Config file (YAML). Without one the daemon runs on built-in defaults.")
    var config: String?

    @Option(name: .long, help: "Unix socket path to bind when systemd has not passed a socket.")
    var socket: String?

    @Option(name: .customLong("check-config"), help: "Check a config file, print every error with file:line, exit.")
    var checkConfig: String?

    @Option(name: .long, help: "Policy file (runtime enforcement); overrides the config's `policy:`.")
    var policy: String?

    @Option(name: .customLong("state-dir"),
            help: "Where state that outlives a restart is kept (default: $STATE_DIRECTORY, set by systemd).")
    var stateDir: String?

    @Option(name: .long, help: "Event-loop threads serving app connections (libcurl has its own thread).")
    var threads = 1

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        if let file = checkConfig {
            do {
                let c = try ConfigLoader.load(file: file)
                print("\(file): OK (\(c.providers.count) providers, \(c.routes.count) routes)")
                if let path = policy ?? c.policyPath {
                    let p = try PolicyLoader.load(file: path)
                    print("\(path): OK (\(p.agents.count) agents)")
                }
                return
            } catch {
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
                throw ExitCode(1)
            }
        }

        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "breakwaterd")

        var loaded: BreakwaterConfig
        if let file = config {
            do {
                loaded = try ConfigLoader.load(file: file)
            } catch {
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
                throw ExitCode(1)
            }
        } else {
            loaded = .defaults
        }

        // The daemon's own user may always administer it: it could stop or restart it anyway.
        loaded.admins.uids.insert(getuid())

        let address: ListenAddress
        if let fd = Systemd.listenFDs().first {
            address = .inheritedFD(fd)
        } else {
            address = .path(socket ?? loaded.socketPath ?? Self.defaultSocketPath())
        }
        var governance: GovernancePolicy?
        if let path = policy ?? loaded.policyPath {
            do {
                governance = try PolicyLoader.load(file: path)
            } catch {
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
                throw ExitCode(1)
            }
        }
        let router = Router(config: loaded, environment: ProcessInfo.processInfo.environment)
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        // systemd's StateDirectory= may list several paths, separated by colons: the first is ours.
        let state = stateDir ?? ProcessInfo.processInfo.environment["STATE_DIRECTORY"]?
            .split(separator: ":").first.map(String.init)
        let server = BreakwaterServer(router: router, address: address, logger: logger, policy: governance,
                                      policyPath: policy ?? loaded.policyPath, stateDirectory: state,
                                      group: eventLoops)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }

    /// `/run/breakwater/breakwater.sock` for root; `$XDG_RUNTIME_DIR/breakwater.sock` for anyone else.
    static func defaultSocketPath() -> String {
        if getuid() != 0, let dir = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"] {
            return dir + "/breakwater.sock"
        }
        return "/run/breakwater/breakwater.sock"
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
