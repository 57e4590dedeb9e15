import ArgumentParser
import Dispatch
import FakeProviderKit
import Foundation
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs the fake provider as a process, for end-to-end tests and the benchmark. It speaks OpenAI, Anthropic,
/// Gemini and Azure OpenAI on their real paths, all on one port.
///
/// Prints one JSON line with the port, the OpenAI base URL and the origin (the base URL the other providers'
/// SDKs take) to stdout once it listens, then serves until SIGTERM or SIGINT and exits 0. Diagnostics go to
/// stderr; requests are never logged.
struct FakeProviderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fake-provider",
        abstract: "A fake LLM provider (OpenAI, Anthropic, Gemini, Azure OpenAI wire formats) with scripted faults."
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one.")
    var port = 0

    @Option(help: "JSON file describing the personality: default step, probabilistic faults, seed.")
    var personality: String?

    @Option(help: "Seed for the personality's fault generator (overrides the file's seed).")
    var seed: UInt64?

    @Flag(help: "Start down: every chat request gets 503 until POST /_fake/personality brings it back.")
    var down = false

    @Option(help: "Event loop threads.")
    var threads = 1

    func validate() throws {
        guard (0...65_535).contains(port) else {
            throw ValidationError("--port must be between 0 and 65535")
        }
        guard threads >= 1 else {
            throw ValidationError("--threads must be at least 1")
        }
    }

    func run() async throws {
        // A load of thousands of concurrent requests needs as many descriptors as connections: take the hard limit
        // (the soft one is often 1,024).
        var files = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        if getrlimit(resource, &files) == 0, files.rlim_cur < files.rlim_max {
            files.rlim_cur = files.rlim_max
            _ = setrlimit(resource, &files)
        }
        var chosen = Personality.healthy
        if let path = personality {
            do {
                chosen = try Personality(contentsOfFile: path)
            } catch {
                throw ValidationError("\(error)")
            }
        }
        if let seed {
            chosen.seed = seed
        }
        if down {
            chosen.down = true
        }

        // Ignore the default dispositions first, so a signal that arrives while starting is not fatal.
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let (stopRequests, stop) = AsyncStream<Int32>.makeStream()
        let queue = DispatchQueue(label: "fake-provider.signals")
        let sources = [SIGTERM, SIGINT].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { stop.yield(number) }
            source.resume()
            return source
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let provider = try await FakeProvider.start(
            host: host, port: port, personality: chosen, eventLoopGroup: group
        )
        let line = "{\"port\": \(provider.port), \"base_url\": \"\(provider.baseURL)\", "
            + "\"origin\": \"\(provider.origin)\"}\n"
        FileHandle.standardOutput.write(Data(line.utf8))

        for await _ in stopRequests {
            break
        }
        sources.forEach { $0.cancel() }
        try await provider.shutdown()
        try await group.shutdownGracefully()
    }
}

// `main.swift` cannot use `@main`, and a bare `main()` call here resolves to the synchronous overload.
let command = FakeProviderCommand.parseOrExit()
do {
    try await command.run()
} catch {
    FakeProviderCommand.exit(withError: error)
}
