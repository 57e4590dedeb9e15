import BreakwaterClient
import Foundation
import Histogram
import Synchronization

/// `breakwater-bench --slow-streams`: many streams open at once, each a chunk every 100 ms (an LLM answering at
/// ~10 tokens a second), through the daemon to an HTTP/1.1 provider (the fake, with `upstream_connections_per_host`
/// raised above the number of streams, so that every stream has its connection) and to an HTTP/2 one (nghttpx, a
/// real HTTP/2 server from Debian's nghttp2-proxy, over TLS in front of the fake). For each count: the daemon's CPU
/// time per forwarded chunk, and its resident memory per open stream above what it held idle. Idle is read after a
/// warm-up (a few streams opened and cancelled), so that library code and data paged in by the first calls — once
/// per process, ~6 MB of Foundation, ICU and the Swift runtime — are not charged to the streams. And what a chunk
/// waits: the gaps between one stream's chunks as the app receives them (100 ms at the provider), whose spread is
/// what the daemon's `limits.stream_coalescing_window` (and the machine's load) adds.
struct SlowStreams {
    var bin: String
    var dir: String
    var seconds: Double
    var counts: [Int]
    /// `limits.stream_coalescing_window` values, "default" for none written.
    var windows: [String]

    static let chunkIntervalMs = 100
    /// Streams per client connection (the daemon's default `max_concurrent_calls` is 256).
    static let streamsPerConnection = 200
    /// Streams opened and cancelled before idle is read.
    static let warmUpStreams = 20

    enum Upstream: String, CaseIterable {
        case http1 = "HTTP/1.1"
        case http2 = "HTTP/2 (TLS, nghttpx)"
    }

    struct Row {
        var upstream: Upstream
        var window: String
        var streams: Int
        var open: Int
        /// The daemon's TCP connections to the provider (or nghttpx) at the window's start.
        var upstreamConnections: Int
        var chunksPerSecond: Double
        var cpuPerChunk: Double
        var kibPerStream: Double
        /// Of `kibPerStream`, the process's own memory (RssAnon: heap, stacks, buffers).
        var anonymousKiBPerStream: Double
        /// Gaps between one stream's consecutive chunks at the app, in the window: p50, p99, max (ms).
        var gaps: (p50: Double, p99: Double, max: Double)
        var errors: Int
    }

    func run() async throws {
        print("breakwater-bench --slow-streams: a chunk every \(Self.chunkIntervalMs) ms per stream, \(seconds) s "
            + "measured per row")
        print("machine: " + Machine.line)
        print("command: " + Machine.command)
        var rows: [Row] = []
        for upstream in Upstream.allCases {
            for count in counts {
                for window in windows {
                    rows.append(try await measure(upstream, streams: count, window: window))
                }
            }
        }
        print("\n| upstream | coalescing window | streams | open in the window | chunks/s (offered) "
            + "| daemon CPU per chunk | chunk gap p50 / p99 / max | RSS per open stream | of it anonymous "
            + "| upstream connections |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows {
            print(String(format: "| %@ | %@ | %d | %d | %.0f (%d) | %.1f µs | %.1f / %.1f / %.1f ms | %.1f KB | %.1f KB "
                + "| %d |", r.upstream.rawValue, r.window,
                         r.streams, r.open, r.chunksPerSecond, r.streams * 1000 / Self.chunkIntervalMs, r.cpuPerChunk,
                         r.gaps.p50, r.gaps.p99, r.gaps.max, r.kibPerStream * 1.024, r.anonymousKiBPerStream * 1.024,
                         r.upstreamConnections))
        }
    }

    private func measure(_ upstream: Upstream, streams: Int, window coalescing: String) async throws -> Row {
        let tag = "slow-\(upstream == .http1 ? "h1" : "h2")-\(streams)-\(coalescing)"
        // Streams outlast the ramp, the warm-up and the window; the loop cancels them at its end.
        let ramp = max(2.0, Double(streams) / 1000)
        let chunks = Int((ramp + 1 + seconds + 5) * 1000) / Self.chunkIntervalMs
        let personality = dir + "/personality-\(tag).json"
        let content = String(repeating: "word ", count: chunks)
        try #"{"name": "slow", "default_step": {"chunk_interval_ms": \#(Self.chunkIntervalMs), "content": "\#(content)"}}"#
            .write(toFile: personality, atomically: true, encoding: .utf8)
        let fake = try Child(bin + "/fake-provider", ["--port", "0", "--personality", personality],
                             log: dir + "/fake-\(tag).log")
        defer { fake.stop() }
        let fakePort = try fake.port()

        var proxy: Child?
        defer { proxy?.stop() }
        var upstreamPort = fakePort
        var provider = #"{kind: openai, base_url: "http://127.0.0.1:\#(fakePort)/v1", api_key_env: BENCH_KEY, "#
            + #"http_version: "1.1"}"#
        if upstream == .http2 {
            let (child, port, caFile) = try startNghttpx(backendPort: fakePort, tag: tag)
            proxy = child
            upstreamPort = port
            // Connections for the streams at 100 each (nghttpx's limit and the default max_concurrent_streams), as
            // README advises: left higher, libcurl 7.88 opens a connection per stream in the ramp (~100 KB each).
            provider = #"{kind: openai, base_url: "https://127.0.0.1:\#(port)/v1", api_key_env: BENCH_KEY, "#
                + #"http_version: "2", ca_file: \#(caFile), max_connections: \#(streams / 100 + 1)}"#
        }
        let config = dir + "/\(tag).yaml"
        // `upstream_connections_per_host` is each provider's default max_connections (and libcurl's per-host cap
        // before pools existed): the HTTP/1.1 provider's.
        try """
            limits: {upstream_connections_per_host: \(streams + 100), upstream_connections: \(streams + 100)\
            \(coalescing == "default" ? "" : ", stream_coalescing_window: \(coalescing)")}
            providers:
              fake: \(provider)
            routes:
              default: [{provider: fake, model: gpt-4o-mini}]

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = dir + "/\(tag).sock"
        let daemon = try Child(bin + "/breakwaterd", ["--config", config, "--socket", socket, "--log-level", "warning"],
                               environment: ["BENCH_KEY": "bench-key"], log: dir + "/daemon-\(tag).log")
        defer { daemon.stop() }
        let clients = (0..<(streams + Self.streamsPerConnection - 1) / Self.streamsPerConnection).map { _ in
            BreakwaterClient(socketPath: socket, clientName: "bench")
        }
        defer { clients.forEach { $0.close() } }
        try await waitUntilServing(clients[0], daemon)
        for client in clients { _ = try await client.serverLimits() }
        try await warmUp(clients, daemon)
        let idle = (rss: daemon.residentKiB() ?? 0, anonymous: daemon.anonymousRSSKiB() ?? 0)

        let counts = StreamCounts()
        let window = SlowStreamWindow()
        let gaps = ChunkGaps()
        let body = Bench.callBody
        let windowStart = ContinuousClock.now + .milliseconds(Int64((ramp + 1) * 1000))
        let windowEnd = windowStart + .milliseconds(Int64(seconds * 1000))
        func checkpoint(_ index: Int) async {
            let open = ((try? await Self.callsInFlight(clients[0])) ?? nil) ?? 0
            window.read(index, cpu: daemon.cpuMicroseconds() ?? 0, chunks: counts.received.load(ordering: .relaxed),
                        rss: daemon.residentKiB() ?? 0, anonymous: daemon.anonymousRSSKiB() ?? 0, open: open,
                        connections: index == 0 ? daemon.tcpConnections(toPort: upstreamPort) : 0)
        }
        // Not ClosedLoop: its per-worker latency histogram (1.6 MB each) is 8 GB at 5,000 streams, and a stream's
        // latency is not what this measures.
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<streams {
                let client = clients[index % clients.count]
                group.addTask {
                    while !Task.isCancelled, ContinuousClock.now < windowEnd {
                        do {
                            let stream = try await client.stream(route: "default", body: body)
                            var last: ContinuousClock.Instant?
                            for try await _ in stream {
                                counts.received.add(1, ordering: .relaxed)
                                let now = ContinuousClock.now
                                if let last, last >= windowStart, now < windowEnd { gaps.record(now - last) }
                                last = now
                            }
                        } catch {
                            guard !Task.isCancelled, ContinuousClock.now < windowEnd else { return }
                            counts.failures.add(1, ordering: .relaxed)
                            try? await Task.sleep(for: .milliseconds(100))
                        }
                    }
                }
            }
            try? await Task.sleep(until: windowStart, clock: .continuous)
            await checkpoint(0)
            try? await Task.sleep(until: windowEnd, clock: .continuous)
            await checkpoint(1)
            group.cancelAll()
        }
        let errors = counts.failures.load(ordering: .relaxed)
        let forwarded = max(1, window.chunks)
        let gap = gaps.percentiles()
        let row = Row(upstream: upstream, window: coalescing, streams: streams, open: window.open,
                      upstreamConnections: window.upstreamConnections,
                      chunksPerSecond: Double(window.chunks) / seconds,
                      cpuPerChunk: Double(window.cpu) / Double(forwarded),
                      kibPerStream: Double(window.meanRSS - idle.rss) / Double(streams),
                      anonymousKiBPerStream: Double(window.meanAnonymous - idle.anonymous) / Double(streams),
                      gaps: gap, errors: errors)
        print(String(format: "%@, window %@, %5d streams (%d open): %7.0f chunks/s of %d offered, daemon CPU %5.1f µs "
            + "per chunk, chunk gap p50 %.1f p99 %.1f max %.1f ms, "
            + "RSS %.1f MB idle → %.1f MB (%.1f KB per open stream, %.1f KB of it anonymous), %d upstream "
            + "connections", upstream.rawValue, coalescing,
            streams, window.open, row.chunksPerSecond, streams * 1000 / Self.chunkIntervalMs, row.cpuPerChunk,
            gap.p50, gap.p99, gap.max,
            Double(idle.rss) / 1024, Double(window.meanRSS) / 1024, row.kibPerStream * 1.024,
            row.anonymousKiBPerStream * 1.024, row.upstreamConnections)
            + (errors > 0 ? ", \(errors) streams failed" : ""))
        return row
    }

    /// `calls_in_flight` from the daemon's status; nil when the answer does not hold it.
    private static func callsInFlight(_ client: BreakwaterClient) async throws -> Int? {
        let status = try JSONSerialization.jsonObject(with: Data(try await client.admin("status")))
        return (status as? [String: Any])?["calls_in_flight"] as? Int
    }

    /// Opens a few streams, takes two chunks of each and cancels them, then waits (10 s at most) until the daemon
    /// has no call in flight: what the first calls page in is then in the idle figure.
    private func warmUp(_ clients: [BreakwaterClient], _ daemon: Child) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<Self.warmUpStreams {
                group.addTask {
                    let stream = try await clients[index % clients.count].stream(route: "default", body: Bench.callBody)
                    var chunks = 0
                    for try await _ in stream {
                        chunks += 1
                        if chunks == 2 { break }
                    }
                }
            }
            try await group.waitForAll()
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if try await Self.callsInFlight(clients[0]) == 0 { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ChildExited(output: "the warm-up streams were still in flight in the daemon after 10 s")
    }

    /// nghttpx serving HTTP/2 over TLS (a throw-away self-signed certificate) in front of the fake; returns it,
    /// its port and the certificate for the daemon's `ca_file`.
    private func startNghttpx(backendPort: Int, tag: String) throws -> (Child, Int, String) {
        let nghttpx = "/usr/sbin/nghttpx"
        guard FileManager.default.isExecutableFile(atPath: nghttpx) else {
            throw ChildExited(output: "no \(nghttpx): apt-get install nghttp2-proxy")
        }
        let cert = dir + "/cert.pem"
        let key = dir + "/key.pem"
        if !FileManager.default.fileExists(atPath: cert) {
            let openssl = try Child("/usr/bin/openssl", [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
            ], log: dir + "/openssl.log")
            openssl.process.waitUntilExit()
        }
        // Port 0 is not an option for nghttpx: find a free port, and retry if another process takes it first.
        for _ in 0..<5 {
            let port = try HTTPBench.freePort()
            let child = try Child(nghttpx, [
                "--frontend=127.0.0.1,\(port)", "--backend=127.0.0.1,\(backendPort)", "--workers=1", "--no-ocsp",
                "--rlimit-nofile=65536", "--accesslog-file=/dev/null", "--errorlog-file=\(dir)/nghttpx-\(tag).err",
                key, cert,
            ], log: dir + "/nghttpx-\(tag).out")
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, child.process.isRunning {
                if canConnect(port: port) { return (child, port, cert) }
                Thread.sleep(forTimeInterval: 0.05)
            }
            child.stop()
        }
        throw ChildExited(output: "nghttpx did not start; see \(dir)/nghttpx-\(tag).err")
    }
}

/// Chunks the app side received and streams that failed, counted by every stream's task.
final class StreamCounts: Sendable {
    let received = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
}

/// The gaps between one stream's consecutive chunks as the app side received them, in µs (one histogram for all
/// streams: ~50,000 records a second at most, under a lock).
final class ChunkGaps: Sendable {
    private let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000,
                                                    numberOfSignificantValueDigits: .three))

    func record(_ gap: Duration) {
        let micros = UInt64(clamping: gap.components.seconds * 1_000_000 + gap.components.attoseconds / 1_000_000_000_000)
        histogram.withLock { _ = $0.record(min(micros, 60_000_000)) }
    }

    /// p50, p99 and the largest gap, in ms.
    func percentiles() -> (p50: Double, p99: Double, max: Double) {
        histogram.withLock { h in
            (Double(h.valueAtPercentile(50)) / 1000, Double(h.valueAtPercentile(99)) / 1000, Double(h.max) / 1000)
        }
    }
}

/// The daemon's CPU time, the chunks the app side received and the daemon's RSS at the window's start and end.
final class SlowStreamWindow: @unchecked Sendable {
    // Touched only from ClosedLoop's checkpoint callback, one call at a time, then read after the run.
    private var start = (cpu: 0, chunks: 0, rss: 0, anonymous: 0)
    private var end = (cpu: 0, chunks: 0, rss: 0, anonymous: 0)
    /// Calls in flight in the daemon at the window's start (every stream open, if the ramp worked).
    private(set) var open = 0
    /// The daemon's connections upstream at the window's start.
    private(set) var upstreamConnections = 0

    func read(_ checkpoint: Int, cpu: Int, chunks: Int, rss: Int, anonymous: Int, open: Int, connections: Int) {
        if checkpoint == 0 {
            start = (cpu, chunks, rss, anonymous)
            self.open = open
            upstreamConnections = connections
        } else {
            end = (cpu, chunks, rss, anonymous)
        }
    }

    var cpu: Int { end.cpu - start.cpu }
    var chunks: Int { end.chunks - start.chunks }
    var meanRSS: Int { (start.rss + end.rss) / 2 }
    var meanAnonymous: Int { (start.anonymous + end.anonymous) / 2 }
}

/// Whether something accepts TCP connections on the loopback port.
func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafeMutablePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}
