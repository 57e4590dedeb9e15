import ArgumentParser
import BreakwaterClient
import Foundation
import Histogram

/// `--http`: the OpenAI-compatible HTTP front under `wrk` (one thread), against the fake provider straight and
/// through the daemon's loopback TCP listener, at each number of connections; and, at the same concurrency and
/// against the same daemon, the binary protocol through the client shim — all in one run. The TCP listener needs a
/// policy, so the daemon runs governed (token, scopes, tenant, budget, audit) for all three.
struct HTTPBench {
    let bin: String
    let dir: String
    let seconds: Int
    let connections: [Int]
    let latencyMs: Int

    /// wrk's summary of one run.
    struct WrkResult {
        var requests = 0
        var perSecond = 0.0
        var p50 = "?"
        var p99 = "?"
        var errors = 0

        init(_ output: String) {
            for raw in output.split(separator: "\n") {
                let line = raw.trimmingCharacters(in: .whitespaces)
                let words = line.split(separator: " ", omittingEmptySubsequences: true)
                if line.hasPrefix("Requests/sec:"), words.count > 1 { perSecond = Double(words[1]) ?? 0 }
                if line.contains(" requests in "), let n = Int(words.first ?? "") { requests = n }
                if line.hasPrefix("50%"), words.count > 1 { p50 = String(words[1]) }
                if line.hasPrefix("99%"), words.count > 1 { p99 = String(words[1]) }
                if line.hasPrefix("Non-2xx or 3xx responses:"), let n = Int(words.last ?? "") { errors += n }
                if line.hasPrefix("Socket errors:") {
                    // "Socket errors: connect 0, read 0, write 0, timeout 0"
                    errors += line.split(separator: ",").compactMap { Int($0.split(separator: " ").last ?? "") }
                        .reduce(0, +)
                }
            }
        }

        var line: String {
            String(format: "%8.0f req/s   p50 %8@   p99 %8@   (%d requests, %d errors)", perSecond, p50 as NSString,
                   p99 as NSString, requests, errors)
        }
    }

    func run() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk") else {
            throw ValidationError("--http needs wrk (Debian: apt-get install wrk)")
        }
        let httpPort = try Self.freePort()
        let (fake, fakePort, config) = try Bench.startFake(bin: bin, dir: dir, latencyMs: latencyMs, tag: "http",
                                                           extraConfig: "http:\n  tcp: 127.0.0.1:\(httpPort)\n")
        defer { fake.stop() }
        try Bench.policyText().write(toFile: dir + "/policy.yaml", atomically: true, encoding: .utf8)
        let socket = dir + "/bench-http.sock"
        let daemon = try Child(bin + "/breakwaterd", ["--config", config, "--socket", socket, "--policy",
                                                      dir + "/policy.yaml", "--log-level", "warning"],
                               environment: ["BENCH_KEY": "bench-key"], log: dir + "/daemon-http.log")
        defer { daemon.stop() }
        let client = BreakwaterClient(socketPath: socket, credential: Bench.agentToken, clientName: "bench")
        defer { client.close() }
        try await waitUntilServing(client, daemon)

        let content = #"{"messages":[{"role":"user","content":"Say something short about breakwaters."}],"#
            + #""max_tokens":32,"model":"default"}"#
        let script = dir + "/post.lua"
        try """
            wrk.method = "POST"
            wrk.body = '\(content)'
            wrk.headers["Content-Type"] = "application/json"
            wrk.headers["Authorization"] = "Bearer \(Bench.agentToken)"
            wrk.headers["X-Breakwater-Action"] = "chat.reply"
            wrk.headers["X-Breakwater-Tenant"] = "acme"
            """.write(toFile: script, atomically: true, encoding: .utf8)

        print("\n== HTTP front under wrk (1 thread, \(seconds) s per cell), provider latency \(latencyMs) ms; "
            + "daemon governed (the TCP listener needs a policy)")
        let body = Array(content.utf8)
        for c in connections {
            print("\(c) connection\(c == 1 ? "" : "s"):")
            let direct = try wrk(c, url: "http://127.0.0.1:\(fakePort)/v1/chat/completions", script: script)
            print("  (a) direct to the fake      " + direct.line)
            let before = daemon.cpuMicroseconds() ?? 0
            let front = try wrk(c, url: "http://127.0.0.1:\(httpPort)/v1/chat/completions", script: script)
            let used = (daemon.cpuMicroseconds() ?? 0) - before
            print("  (b) through the HTTP front  " + front.line)
            if front.requests > 0 {
                print(String(format: "      breakwaterd CPU (user + system) %.1f µs per request, RSS %.1f MB "
                             + "(own anonymous memory %.1f MB)", Double(used) / Double(front.requests),
                             Double(daemon.residentKiB() ?? 0) / 1024, Double(daemon.anonymousRSSKiB() ?? 0) / 1024))
            }
            let cpu = CPUWindow()
            let binary = await ClosedLoop(concurrency: c, warmup: 1, seconds: Double(seconds))
                .run(checkpoints: [0, Double(seconds)], atCheckpoint: { cpu.read($0, daemon.cpuMicroseconds()) }) {
                    _ = try await client.send(route: "default", body: body, action: "chat.reply", tenant: "acme")
                }
            print("  (c) binary protocol (shim)  " + binary.line)
            if let used = cpu.used, binary.histogram.totalCount > 0 {
                print(String(format: "      breakwaterd CPU (user + system) %.1f µs per call",
                             Double(used) / Double(binary.histogram.totalCount)))
            }
        }
        print("breakwaterd peak RSS: \(daemon.peakRSSKiB().map { String(format: "%.1f MB", Double($0) / 1024) } ?? "?")")
    }

    /// One wrk run (plus a second of warm-up that is not counted).
    private func wrk(_ connections: Int, url: String, script: String) throws -> WrkResult {
        _ = try Self.output("/usr/bin/wrk", ["-t1", "-c\(connections)", "-d1s", "-s", script, url])
        return WrkResult(try Self.output("/usr/bin/wrk", ["-t1", "-c\(connections)", "-d\(seconds)s", "--latency",
                                                          "-s", script, url]))
    }

    static func output(_ path: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// A loopback port nothing listens on now (the kernel's pick for a socket bound to port 0).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { a -> Int32 in
                guard bind(fd, a, length) == 0 else { return -1 }
                return getsockname(fd, a, &length)
            }
        }
        guard bound == 0 else { throw ValidationError("no free loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
