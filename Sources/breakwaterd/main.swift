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

    @Option(name: .customLong("http-socket"),
            help: "Unix socket path for the OpenAI-compatible HTTP front when systemd has not passed one (overrides the config's http.socket).")
    var httpSocket: String?

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

        // SIGHUP's default action ends the process: ignored from the start, so a `systemctl reload` that arrives
        // before the reload handler is installed (just after start-up) is dropped instead of killing the daemon.
        signal(SIGHUP, SIG_IGN)
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "breakwaterd")

        let sources = DaemonSettings.Sources(configPath: config, policyOverride: policy)
        let settings: DaemonSettings
        do {
            settings = try sources.load()
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }

        // From systemd: the socket named "http" (FileDescriptorName=http) is the HTTP front's; the other one is
        // the binary protocol's. Either may come from systemd while the other is bound here.
        let inherited = Systemd.namedListenFDs()
        let address: ListenAddress
        if let fd = inherited.first(where: { $0.name != "http" })?.fd {
            address = .inheritedFD(fd)
        } else {
            address = .path(socket ?? settings.config.socketPath ?? Self.defaultSocketPath())
        }
        var http: [ListenAddress] = []
        if let fd = inherited.first(where: { $0.name == "http" })?.fd {
            http.append(.inheritedFD(fd))
        } else if let path = httpSocket ?? settings.config.http.socketPath {
            http.append(.path(path))
        }
        if let tcp = settings.config.http.tcpListen { http.append(.tcp(host: tcp.host, port: tcp.port)) }
        Self.raiseOpenFileLimit(logger: logger)
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        // systemd's StateDirectory= may list several paths, separated by colons: the first is ours.
        let state = stateDir ?? ProcessInfo.processInfo.environment["STATE_DIRECTORY"]?
            .split(separator: ":").first.map(String.init)
        let server = BreakwaterServer(settings: settings, sources: sources, address: address, httpAddresses: http,
                                      logger: logger,
                                      stateDirectory: state, group: eventLoops)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
    }

    /// Every connection is a file descriptor, and so is every provider connection: the soft limit a service
    /// starts with (1,024 under systemd) would refuse connections (EMFILE) long before `limits.max_connections`
    /// (4,096). Raise it to the hard limit, which is the process's to take.
    static func raiseOpenFileLimit(logger: Logger) {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let was = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(resource, &limit) == 0 {
            logger.info("raised the open-file limit", metadata: ["from": "\(was)", "to": "\(limit.rlim_cur)"])
        }
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
