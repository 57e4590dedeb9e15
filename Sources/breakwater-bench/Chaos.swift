import ArgumentParser
import BreakwaterClient
import CurlTransport
import Foundation

/// `breakwater-bench --chaos`: sustained closed-loop load through a matrix of provider faults, judged from outside.
///
/// For every fault row, concurrency and mode (direct, retries only, with fallback) it starts fresh fake providers
/// and (except direct) a fresh breakwaterd, so no breaker, budget or rate-limit state leaks from one cell into the
/// next, and measures at the fakes: how many upstream requests each call cost and who served it. The daemon's own
/// report is read only for what the fakes cannot see (breaker openings, retries the budget refused).
struct Chaos {
    let bin: String
    let dir: String
    let seconds: Double
    let warmup: Double
    let concurrencies: [Int]
    let rows: [ChaosRow]
    let latencyMs: Int
    let extraProviderYAML: String?
    let jsonPath: String?
    let faultSeed: UInt64

    /// Every call's deadline (the daemon's `timeout_ms`, the direct calls' total timeout): nothing hangs a cell.
    static let callTimeoutMs: UInt32 = 30_000
    static let apiKey = "bench-key"
    static let retryConfig = "{retry_count: 3, backoff_base: 25ms, backoff_max: 250ms}"
    /// Not passed on to the daemons: a state directory would keep open breakers from one cell to the next, and a
    /// benchmark run under systemd must not have its daemons talk to the service manager.
    static let unsetForDaemon = ["STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]

    /// `16,64` → [16, 64].
    static func parseConcurrencies(_ text: String) throws -> [Int] {
        let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("--chaos-concurrency takes positive numbers separated by commas, e.g. 16,64")
        }
        return values.compactMap { $0 }
    }

    /// `3,5`, `hard-down`, `"503 30%"` → those rows, in the matrix's order; nil → every row.
    static func parseRows(_ text: String?) throws -> [ChaosRow] {
        guard let text else { return ChaosRow.all }
        var chosen = Set<Int>()
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let match = ChaosRow.all.first { row in
                Int(item) == row.number || item.lowercased() == row.name.lowercased()
                    || ChaosRow.slug(item) == row.slug
            }
            guard let match else {
                let list = ChaosRow.all.map { "\($0.number) (\($0.slug))" }.joined(separator: ", ")
                throw ValidationError("no chaos row \"\(item)\"; rows: \(list)")
            }
            chosen.insert(match.number)
        }
        return ChaosRow.all.filter { chosen.contains($0.number) }
    }

    func run() async throws {
        let rowList = rows.map { String($0.number) }.joined(separator: ",")
        say("breakwater-bench --chaos: rows \(rowList) × concurrency "
            + concurrencies.map(String.init).joined(separator: ",") + " × ("
            + ChaosMode.allCases.map(\.rawValue).joined(separator: ", ") + "); "
            + "\(Self.seconds(warmup)) s warm-up, then \(Self.seconds(seconds)) s measured, per cell")
        say("machine: " + Machine.line)
        say("command: " + Machine.command)
        for line in headerNotes { say(line) }

        let control = try CurlEngine(maxHostConnections: 4, maxTotalConnections: 16)
        defer { control.shutdown() }
        var cells: [ChaosCell] = []
        var calibrations: [[String: Any]] = []
        // Row 1's direct calls/s per concurrency: the offered load the token bucket is set to half of.
        var healthyDirect: [Int: Double] = [:]
        for row in rows {
            say("\n== \(row.number). \(row.name): \(row.description)")
            if let note = row.note { say("   note: " + note) }
            var rowFailure: String?
            var rpms: [Int: Int] = [:]
            if case .tokenBucket = row.fault {
                // Before spending a calibration run on it: does this fake know the key at all?
                rowFailure = probeTokenBucket()
                for concurrency in concurrencies where rowFailure == nil {
                    if healthyDirect[concurrency] == nil {
                        let calibration = await runCell(.healthy, concurrency, .direct, rpm: nil, control: control)
                        if calibration.error == nil {
                            healthyDirect[concurrency] = calibration.callsPerSecond
                        }
                        calibrations.append(calibration.json)
                        say("   calibration (row 1, direct, c=\(concurrency)): "
                            + (calibration.error ?? String(format: "%.1f calls/s", calibration.callsPerSecond)))
                    }
                    if let offered = healthyDirect[concurrency], offered > 0 {
                        let r = Int((60 * offered / 2).rounded())
                        rpms[concurrency] = r
                        say("   c=\(concurrency): R = 60 × " + String(format: "%.1f", offered)
                            + " calls/s ÷ 2 = \(r) requests per minute (tokens_per_minute \(r * 100_000))")
                    }
                }
            }
            say(ChaosCell.tableHeader)
            for concurrency in concurrencies {
                let rpm = rpms[concurrency]
                for mode in ChaosMode.allCases {
                    var cell: ChaosCell
                    if let rowFailure {
                        cell = ChaosCell(row: row, concurrency: concurrency, mode: mode, seconds: seconds)
                        cell.error = rowFailure
                    } else if case .tokenBucket = row.fault, rpm == nil {
                        cell = ChaosCell(row: row, concurrency: concurrency, mode: mode, seconds: seconds)
                        cell.error = "no healthy direct throughput at c=\(concurrency) to set R from"
                    } else {
                        cell = await runCell(row, concurrency, mode, rpm: rpm, control: control)
                    }
                    if row.number == ChaosRow.healthy.number, mode == .direct, cell.error == nil {
                        healthyDirect[concurrency] = cell.callsPerSecond
                    }
                    if cell.skipsRow { rowFailure = cell.error }
                    say(cell.tableLine)
                    cells.append(cell)
                }
            }
        }

        say("\nMarkdown (for BENCHMARKS.md):\n")
        say(ChaosCell.markdownHeader)
        for cell in cells { say(cell.markdownLine) }
        if let jsonPath {
            let document: [String: Any] = [
                "command": Machine.command, "machine": Machine.line, "provider_latency_ms": latencyMs,
                "warmup_seconds": warmup, "seconds": seconds, "concurrencies": concurrencies,
                "retry_config": Self.retryConfig, "extra_provider_yaml": extraProviderYAML ?? NSNull(),
                "calibrations": calibrations, "cells": cells.map(\.json),
            ]
            let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: jsonPath))
            say("\nJSON: \(jsonPath)")
        }
    }

    /// Nil when the fake starts with a `token_bucket` personality; else why not.
    func probeTokenBucket() -> String? {
        let probeDir = dir + "/token-bucket-probe"
        do {
            try FileManager.default.createDirectory(atPath: probeDir, withIntermediateDirectories: true)
            let row = ChaosRow.all.first { $0.fault == .tokenBucket } ?? .healthy
            let (child, _) = try startFake("primary", row.personality(latencyMs: latencyMs, tokenBucketRPM: 600, seed: faultSeed),
                                           in: probeDir, tokenBucket: true)
            child.stop()
            return nil
        } catch let error as ChaosError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    /// What every cell has in common, printed once at the top.
    var headerNotes: [String] {
        var lines = [
            "provider latency L = \(latencyMs) ms: every personality's default_step.delay_first_byte_ms (row 8 "
                + "replaces it with 200). The error answers the benchmark scripts (503, 429, down) set "
                + "delay_first_byte_ms 0 and come back at once, as providers' overload errors do (the token "
                + "bucket's 429s come as the fake times them); the mid-stream faults (rows 9, 10) start like a "
                + "normal answer, after L.",
            "every cell: fresh fake-provider processes and (not direct) a fresh breakwaterd without a state "
                + "directory, so no breaker, budget or rate-limit state carries over; the fakes' fault generator "
                + "seed is \(faultSeed) (--fault-seed).",
            "daemon config: each provider kind openai, http_version \"1.1\", retry_config \(Self.retryConfig), "
                + "everything else default; calls carry timeout_ms \(Self.callTimeoutMs).",
            "modes: direct = libcurl straight at the primary, no retries (same \(Self.callTimeoutMs / 1000) s "
                + "total and, row 9, idle timeout); retries only = route [primary]; with fallback = route "
                + "[primary, fallback], the fallback a second fake, always healthy, latency L.",
            "columns: success = full answers / calls ended in the window; calls/s = calls ended per second; "
                + "p50/p99 of successful calls; att/call = (primary + fallback requests, counted by the fakes) / "
                + "calls; fallback = the fallback's 200s / successful calls; brk open = breaker openings since "
                + "the daemon started (warm-up included), budget ref = retries refused by the retry budget in the "
                + "window, both from the daemon's status (n/a when it does not report them).",
        ]
        if let extraProviderYAML {
            lines.append("extra primary YAML: " + extraProviderYAML.replacingOccurrences(of: "\n", with: " | "))
        }
        return lines
    }

    /// One cell, never throwing: what went wrong is the cell's `error`.
    func runCell(_ row: ChaosRow, _ concurrency: Int, _ mode: ChaosMode, rpm: Int?,
                 control: CurlEngine) async -> ChaosCell {
        var cell = ChaosCell(row: row, concurrency: concurrency, mode: mode, seconds: seconds)
        cell.tokenBucketRPM = rpm
        do {
            try await measure(&cell, control: control)
        } catch let error as ChaosError {
            cell.error = error.message
            cell.skipsRow = error.skipsRow
        } catch {
            cell.error = "\(error)"
        }
        return cell
    }

    private func measure(_ cell: inout ChaosCell, control: CurlEngine) async throws {
        let row = cell.row
        let cellDir = dir + "/\(row.number)-c\(cell.concurrency)-\(cell.mode.slug)"
        try FileManager.default.createDirectory(atPath: cellDir, withIntermediateDirectories: true)
        var children: [Child] = []
        var client: BreakwaterClient?
        var engine: CurlEngine?
        defer {
            client?.close()
            engine?.shutdown()
            for child in children.reversed() { child.stop() }
        }

        let (primary, primaryPort) = try startFake(
            "primary", row.personality(latencyMs: latencyMs, tokenBucketRPM: cell.tokenBucketRPM, seed: faultSeed),
            in: cellDir,
            tokenBucket: row.fault == .tokenBucket)
        children.append(primary)
        var fallbackPort: Int?
        if cell.mode == .fallback {
            let (fallback, port) = try startFake("fallback", ChaosRow.healthy.personality(latencyMs: latencyMs,
                                                                                         tokenBucketRPM: nil,
                                                                                         seed: faultSeed),
                                                 in: cellDir, tokenBucket: false)
            children.append(fallback)
            fallbackPort = port
        }

        let prompt = #"{"messages":[{"role":"user","content":"Say something short about breakwaters."}],"#
            + #""max_tokens":32"#
        let body = Array((prompt + "}").utf8)
        let call: @Sendable () async throws -> Void
        if cell.mode == .direct {
            let loadEngine = try CurlEngine(maxHostConnections: max(64, cell.concurrency),
                                            maxTotalConnections: max(256, cell.concurrency))
            engine = loadEngine
            let request = HTTPRequest(
                method: "POST", url: "http://127.0.0.1:\(primaryPort)/v1/chat/completions",
                headers: [HTTPHeader(name: "Content-Type", value: "application/json"),
                          HTTPHeader(name: "Authorization", value: "Bearer \(Self.apiKey)")],
                body: Array((prompt + #","model":"gpt-4o-mini","stream":\#(row.stream)}"#).utf8),
                timeouts: TransferTimeouts(idle: row.idleTimeout, total: .milliseconds(Int64(Self.callTimeoutMs))),
                httpVersion: .http1_1)
            call = { try await directCall(loadEngine, request) }
        } else {
            let config = cellDir + "/breakwater.yaml"
            try daemonConfig(primaryPort: primaryPort, fallbackPort: fallbackPort, row: row)
                .write(toFile: config, atomically: true, encoding: .utf8)
            let socket = cellDir + "/bw.sock"
            let daemon = try Child(bin + "/breakwaterd",
                                   ["--config", config, "--socket", socket, "--log-level", "warning"],
                                   environment: ["BENCH_KEY": Self.apiKey], unsetting: Self.unsetForDaemon,
                                   log: cellDir + "/daemon.log")
            children.append(daemon)
            let shim = BreakwaterClient(socketPath: socket, clientName: "chaos-bench")
            client = shim
            try await waitForDaemon(daemon, shim, socket: socket)
            let route = cell.mode == .fallback ? "default" : "solo"
            if row.stream {
                call = {
                    let s = try await shim.stream(route: route, body: body, timeoutMs: Self.callTimeoutMs)
                    for try await _ in s {}
                }
            } else {
                call = { _ = try await shim.send(route: route, body: body, timeoutMs: Self.callTimeoutMs) }
            }
        }

        // Counters at the window's start, (rows 4 and 7) five seconds before its end, and at its end.
        var offsets = [0.0]
        let lastOffset = max(0, seconds - 5)
        if row.wantsLastSeconds { offsets.append(lastOffset) }
        offsets.append(seconds)
        var snapshots: [Snapshot] = []
        let loop = ClosedLoop(concurrency: cell.concurrency, warmup: warmup, seconds: seconds)
        cell.result = await loop.run(checkpoints: offsets, atCheckpoint: { index in
            // At the window's start the fakes' counters start afresh (the longest run of 429s is a maximum).
            if index == 0 { await Self.resetFakeStats(control, ports: [primaryPort, fallbackPort]) }
            snapshots.append(await snapshot(control, primaryPort, fallbackPort, client))
        }, call)

        guard let first = snapshots.first, let last = snapshots.last else { return }
        if let end = last.primary, let start = first.primary {
            cell.primary = end.minus(start)
        } else {
            cell.notes.append("primary stats unreadable")
        }
        if fallbackPort != nil {
            if let end = last.fallback, let start = first.fallback {
                cell.fallback = end.minus(start)
            } else {
                cell.notes.append("fallback stats unreadable")
            }
        }
        if client != nil, let end = last.resilience, let start = first.resilience {
            cell.resilience = Snapshot.difference(end, start)
            cell.breakerOpeningsSinceStart = end.values.reduce(0) { $0 + ($1["breaker_openings"] ?? 0) }
        }
        if row.wantsLastSeconds, snapshots.count == 3, let mid = snapshots[1].primary, let end = last.primary,
           seconds - lastOffset > 0 {
            cell.primaryRateLast = (seconds - lastOffset, Double(end.requests - mid.requests) / (seconds - lastOffset))
        }
    }

    /// Starts one fake provider with `personality` and waits for its port. A personality it refuses fails the
    /// cell; one it refuses because it has no `token_bucket` fails the whole row (every cell would).
    private func startFake(_ name: String, _ personality: String, in cellDir: String,
                           tokenBucket: Bool) throws -> (Child, Int) {
        let file = cellDir + "/\(name).json"
        try personality.write(toFile: file, atomically: true, encoding: .utf8)
        let child = try Child(bin + "/fake-provider", ["--port", "0", "--personality", file],
                              log: cellDir + "/\(name).log")
        do {
            return (child, try child.port())
        } catch let exited as ChildExited {
            // ArgumentParser prints "Error: ..." and then the usage lines.
            let lines = exited.output.split(separator: "\n").map(String.init)
            let said = lines.first { $0.hasPrefix("Error:") } ?? lines.first ?? "(nothing)"
            if tokenBucket, said.contains("unknown key 'token_bucket'") {
                throw ChaosError(message: "fake-provider does not support token_bucket "
                                 + "(it refused the key: \"unknown key 'token_bucket'\")", skipsRow: true)
            }
            throw ChaosError(message: "\(name) fake-provider refused its personality: \(said.prefix(300))",
                             skipsRow: true)
        } catch {
            child.stop()
            throw error
        }
    }

    /// The config every cell's daemon runs on: defaults plus the retry settings under test, `timeouts: {idle: 1s}`
    /// on the primary for row 9, and `--extra-provider-yaml` under the primary.
    private func daemonConfig(primaryPort: Int, fallbackPort: Int?, row: ChaosRow) -> String {
        func provider(_ name: String, _ port: Int) -> [String] {
            [
                "  \(name):",
                "    kind: openai",
                "    base_url: \"http://127.0.0.1:\(port)/v1\"",
                "    api_key_env: BENCH_KEY",
                "    http_version: \"1.1\"",
                "    retry_config: \(Self.retryConfig)",
            ]
        }
        var lines = ["providers:"] + provider("primary", primaryPort)
        if row.idleTimeout != nil {
            lines.append("    timeouts: {idle: 1s}")
        }
        if let extraProviderYAML {
            lines += extraProviderYAML.replacingOccurrences(of: "\\n", with: "\n")
                .split(separator: "\n", omittingEmptySubsequences: true).map { "    " + $0 }
        }
        if let fallbackPort {
            lines += provider("fallback", fallbackPort)
        }
        lines.append("routes:")
        if fallbackPort != nil {
            lines.append("  default: [{provider: primary, model: gpt-4o-mini}, "
                + "{provider: fallback, model: gpt-4o-mini}]")
        } else {
            lines.append("  solo: [{provider: primary, model: gpt-4o-mini}]")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Waits until the daemon answers HELLO; fails at once with its log if it exits, after 30 s if it hangs.
    private func waitForDaemon(_ daemon: Child, _ client: BreakwaterClient, socket: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            guard daemon.process.isRunning else {
                throw ChaosError(message: "breakwaterd exited: " + daemon.output.suffix(400), skipsRow: false)
            }
            guard ContinuousClock.now < deadline else {
                throw ChaosError(message: "breakwaterd did not answer within 30 s", skipsRow: false)
            }
            if FileManager.default.fileExists(atPath: socket), (try? await client.serverLimits()) != nil {
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The fakes' counters and the daemon's resilience counters, now.
    private func snapshot(_ control: CurlEngine, _ primaryPort: Int, _ fallbackPort: Int?,
                          _ client: BreakwaterClient?) async -> Snapshot {
        // Both fakes at once, so their counts describe the same instant as nearly as possible.
        async let primary = Self.fakeStats(control, port: primaryPort)
        async let fallback = Self.fakeStats(control, port: fallbackPort)
        var s = Snapshot()
        s.primary = await primary
        s.fallback = await fallback
        if let client, let status = try? await client.admin("status") {
            s.resilience = Snapshot.resilience(fromStatus: status)
        }
        return s
    }

    /// `POST /_fake/reset-stats` on each fake: its counters start afresh, its script, faults and limits carry on.
    static func resetFakeStats(_ engine: CurlEngine, ports: [Int?]) async {
        for port in ports.compactMap({ $0 }) {
            let request = HTTPRequest(method: "POST", url: "http://127.0.0.1:\(port)/_fake/reset-stats",
                                      timeouts: TransferTimeouts(total: .seconds(5)))
            _ = try? await exchange(engine, request)
        }
    }

    /// `GET /_fake/stats`: counters since the last reset (see `resetFakeStats`).
    static func fakeStats(_ engine: CurlEngine, port: Int?) async -> FakeCounts? {
        guard let port else { return nil }
        let request = HTTPRequest(method: "GET", url: "http://127.0.0.1:\(port)/_fake/stats",
                                  timeouts: TransferTimeouts(total: .seconds(5)))
        guard let reply = try? await exchange(engine, request, keepBody: true), reply.status == 200,
              let object = try? JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any]
        else { return nil }
        return FakeCounts(object)
    }

    /// Prints a line and flushes it, even into a pipe or file: a full run takes minutes, and each cell's line is
    /// its progress.
    func say(_ line: String) {
        print(line)
        fflush(nil)
    }

    /// `10.0` → `10`, `2.5` → `2.5`.
    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// A cell failure with the message to print; `skipsRow` when every other cell of the row would fail the same way.
struct ChaosError: Error {
    var message: String
    var skipsRow: Bool
}

/// How the load reaches the primary.
enum ChaosMode: String, CaseIterable, Sendable {
    /// The benchmark's own libcurl engine, straight at the primary fake, no retries.
    case direct
    /// BreakwaterClient → breakwaterd → route `solo: [primary]`.
    case retries = "retries only"
    /// Route `default: [primary, fallback]`, the fallback always healthy.
    case fallback = "with fallback"

    var slug: String { ChaosRow.slug(rawValue) }
}

/// One row of the matrix: the primary's personality for all its cells.
struct ChaosRow: Sendable {
    enum Fault: Sendable, Equatable {
        case none
        case status503(probability: Double)
        case rateLimited429
        case tokenBucket
        case down
        case slow(milliseconds: Int)
        case stall
        case reset
    }

    let number: Int
    let name: String
    let fault: Fault

    static let healthy = ChaosRow(number: 1, name: "healthy", fault: .none)

    static let all: [ChaosRow] = [
        healthy,
        ChaosRow(number: 2, name: "503 10%", fault: .status503(probability: 0.1)),
        ChaosRow(number: 3, name: "503 30%", fault: .status503(probability: 0.3)),
        ChaosRow(number: 4, name: "503 60%", fault: .status503(probability: 0.6)),
        ChaosRow(number: 5, name: "429 20% RA1", fault: .rateLimited429),
        ChaosRow(number: 6, name: "token bucket 2x", fault: .tokenBucket),
        ChaosRow(number: 7, name: "hard down", fault: .down),
        ChaosRow(number: 8, name: "slow 200ms", fault: .slow(milliseconds: 200)),
        ChaosRow(number: 9, name: "stall mid-stream", fault: .stall),
        ChaosRow(number: 10, name: "reset mid-stream", fault: .reset),
    ]

    /// `"503 30%"` → `503-30`, `"429 20% RA1"` → `429-20-ra1`: names that need no quoting on a command line.
    static func slug(_ text: String) -> String {
        text.lowercased().split(whereSeparator: { !($0.isLetter || $0.isNumber) }).joined(separator: "-")
    }

    var slug: String { Self.slug(name) }

    /// The mid-stream faults need streamed calls.
    var stream: Bool { fault == .stall || fault == .reset }

    /// The primary's `timeouts.idle` (and the direct calls' idle limit) for the stall row only: the default 60 s
    /// would outlast the 3 s stall and never show the daemon acting on it.
    var idleTimeout: Duration? { fault == .stall ? .seconds(1) : nil }

    /// Rows where the primary's request rate in the last seconds of the window shows a breaker cutting attempts.
    var wantsLastSeconds: Bool { fault == .status503(probability: 0.6) || fault == .down }

    var description: String {
        switch fault {
        case .none: "every answer 200 after L"
        case .status503(let p): "\(Int(p * 100))% of requests {status: 503}, answered at once"
        case .rateLimited429: "20% of requests {status: 429, retry_after: \"1\"}, answered at once"
        case .tokenBucket:
            "token_bucket {requests_per_minute: R, tokens_per_minute: R × 100000, burst_seconds: 1} per API key, "
                + "R = half the healthy direct throughput at that concurrency"
        case .down: "down: true (every request 503, at once)"
        case .slow(let ms): "every answer 200 after \(ms) ms (instead of L)"
        case .stall: "streamed calls; 10% {stall_after_chunks: 1, stall_ms: 3000}"
        case .reset: "streamed calls; 10% {reset_after_chunks: 1}"
        }
    }

    var note: String? {
        fault == .stall ? "primary timeouts: {idle: 1s} (this row only; direct calls get the same 1 s idle limit)"
            : nil
    }

    /// The primary's personality JSON. Every row keeps the fake's advertised rate-limit window
    /// (`ratelimit_limit_*`) far above the load, as Bench.swift does: the daemon honours those headers, so the
    /// fake's default 10k RPM would otherwise throttle every row.
    func personality(latencyMs: Int, tokenBucketRPM: Int?, seed: UInt64) -> String {
        var delay = latencyMs
        var members: [String] = []
        switch fault {
        case .none:
            break
        case .status503(let p):
            members.append(#""faults": [{"probability": \#(p), "step": {"status": 503, "delay_first_byte_ms": 0}}]"#)
        case .rateLimited429:
            members.append(#""faults": [{"probability": 0.2, "step": {"status": 429, "retry_after": "1", "#
                + #""delay_first_byte_ms": 0}}]"#)
        case .tokenBucket:
            let r = tokenBucketRPM ?? 0
            members.append(#""token_bucket": {"requests_per_minute": \#(r), "tokens_per_minute": \#(r * 100_000), "#
                + #""burst_seconds": 1}"#)
        case .down:
            delay = 0
            members.append(#""down": true"#)
        case .slow(let ms):
            delay = ms
        case .stall:
            members.append(#""faults": [{"probability": 0.1, "step": {"stall_after_chunks": 1, "stall_ms": 3000}}]"#)
        case .reset:
            members.append(#""faults": [{"probability": 0.1, "step": {"reset_after_chunks": 1}}]"#)
        }
        var common = [#""name": "\#(slug)""#, #""seed": \#(seed)"#, #""default_step": {"delay_first_byte_ms": \#(delay)}"#]
        if case .tokenBucket = fault {} else {
            // The token bucket's own headers replace this advertised window (the fake refuses both at once).
            common += [#""ratelimit_limit_requests": 1000000000"#, #""ratelimit_limit_tokens": 1000000000000"#]
        }
        return "{" + (common + members).joined(separator: ", ") + "}"
    }
}

/// The counters of `GET /_fake/stats` the benchmark uses. `rate_limited` and `longest_rate_limited_run` come
/// with the fake's token bucket; nil when this fake has none.
struct FakeCounts: Sendable {
    var requests = 0
    var byStatus: [String: Int] = [:]
    var rateLimited: Int?
    var longestRateLimitedRun: Int?

    init(_ object: [String: Any]) {
        requests = object["requests"] as? Int ?? 0
        byStatus = object["by_status"] as? [String: Int] ?? [:]
        rateLimited = object["rate_limited"] as? Int
        longestRateLimitedRun = object["longest_rate_limited_run"] as? Int
    }

    /// What happened since `earlier`. The longest run is a maximum since the window's start, so it is kept as is.
    func minus(_ earlier: FakeCounts) -> FakeCounts {
        var d = self
        d.requests -= earlier.requests
        d.byStatus = byStatus.merging(earlier.byStatus.mapValues { -$0 }, uniquingKeysWith: +)
        if let r = rateLimited { d.rateLimited = r - (earlier.rateLimited ?? 0) }
        return d
    }

    var ok: Int { byStatus["200"] ?? 0 }
}

/// Counters at one moment of a cell's window.
struct Snapshot {
    var primary: FakeCounts?
    var fallback: FakeCounts?
    /// The status's `resilience` list by provider; nil when the daemon does not report it.
    var resilience: [String: [String: Int]]?

    /// `"resilience": [{"provider": "primary", "first_attempts": N, "retries": N, ...}]` from the status JSON.
    static func resilience(fromStatus bytes: [UInt8]) -> [String: [String: Int]]? {
        guard let status = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
              let list = status["resilience"] as? [[String: Any]] else { return nil }
        var byProvider: [String: [String: Int]] = [:]
        for entry in list {
            guard let provider = entry["provider"] as? String else { continue }
            for (key, value) in entry {
                if let n = value as? Int { byProvider[provider, default: [:]][key, default: 0] += n }
            }
        }
        return byProvider
    }

    /// Per provider and counter: `end − start`.
    static func difference(_ end: [String: [String: Int]], _ start: [String: [String: Int]])
        -> [String: [String: Int]] {
        var out: [String: [String: Int]] = [:]
        for (provider, counts) in end {
            let before = start[provider] ?? [:]
            out[provider] = counts.reduce(into: [:]) { $0[$1.key] = $1.value - (before[$1.key] ?? 0) }
        }
        return out
    }
}

/// One (row, concurrency, mode) cell's figures and how they print.
struct ChaosCell {
    let row: ChaosRow
    let concurrency: Int
    let mode: ChaosMode
    let seconds: Double
    var error: String?
    var skipsRow = false
    var result = Result.empty
    var tokenBucketRPM: Int?
    /// Counters of the measured window, from the fakes.
    var primary: FakeCounts?
    var fallback: FakeCounts?
    /// Per provider, from the daemon's status; nil for direct, or when the daemon does not report it.
    var resilience: [String: [String: Int]]?
    /// Breaker openings since the (fresh) daemon started, warm-up included: a breaker that opened during the
    /// warm-up shapes the whole window.
    var breakerOpeningsSinceStart: Int?
    /// Requests per second at the primary over the last `seconds` of the window (rows 4 and 7).
    var primaryRateLast: (seconds: Double, rate: Double)?
    var notes: [String] = []

    init(row: ChaosRow, concurrency: Int, mode: ChaosMode, seconds: Double) {
        self.row = row
        self.concurrency = concurrency
        self.mode = mode
        self.seconds = seconds
    }

    var callsPerSecond: Double { seconds > 0 ? Double(result.calls) / seconds : 0 }

    var successRate: Double? { result.calls > 0 ? Double(result.successes) / Double(result.calls) : nil }

    var attemptsPerCall: Double? {
        guard let primary, result.calls > 0 else { return nil }
        return Double(primary.requests + (fallback?.requests ?? 0)) / Double(result.calls)
    }

    var fallbackShare: Double? {
        guard let fallback, result.successes > 0 else { return nil }
        return Double(fallback.ok) / Double(result.successes)
    }

    func resilienceSum(_ key: String) -> Int? {
        guard let resilience else { return nil }
        return resilience.values.reduce(0) { $0 + ($1[key] ?? 0) }
    }

    // MARK: Printing

    /// Laid out with the same widths as `tableLine`.
    static let tableHeader = "  " + pad("c", 5) + "  " + pad("mode", -14) + "  "
        + [pad("success", 9), pad("calls/s", 9), pad("p50 ms", 8), pad("p99 ms", 8), pad("att/call", 8),
           pad("fallback", 8), pad("brk open", 8), pad("budget ref", 10), "failures, notes"].joined(separator: "  ")

    var tableLine: String {
        let head = "  " + Self.pad(String(concurrency), 5) + "  " + Self.pad(mode.rawValue, -14)
        if let error { return head + "  FAILED: " + error }
        let columns = [
            Self.pad(success, 9), Self.pad(String(format: "%.1f", callsPerSecond), 9), Self.pad(ms(50), 8),
            Self.pad(ms(99), 8), Self.pad(attempts, 8), Self.pad(share, 8), Self.pad(count("breaker_openings"), 8),
            Self.pad(count("retries_refused_by_budget"), 10),
        ]
        return head + "  " + columns.joined(separator: "  ") + (noteText.isEmpty ? "" : "  " + noteText)
    }

    /// `text` right-aligned in `width` columns, or left-aligned for a negative width.
    static func pad(_ text: String, _ width: Int) -> String {
        let fill = String(repeating: " ", count: max(0, abs(width) - text.count))
        return width < 0 ? text + fill : fill + text
    }

    static let markdownHeader = """
        | row | c | mode | success | calls/s | p50 ms | p99 ms | attempts/call | fallback share | breaker openings \
        | budget refusals | failures, notes |
        |---|---|---|---|---|---|---|---|---|---|---|---|
        """

    var markdownLine: String {
        let lead = "| \(row.number). \(row.name) | \(concurrency) | \(mode.rawValue) "
        if let error { return lead + "| FAILED: \(error.replacingOccurrences(of: "|", with: "\\|")) |||||||||" }
        return lead + "| \(success) | " + String(format: "%.1f", callsPerSecond)
            + " | \(ms(50)) | \(ms(99)) | \(attempts) | \(share) | \(count("breaker_openings")) "
            + "| \(count("retries_refused_by_budget")) | \(noteText.replacingOccurrences(of: "|", with: "\\|")) |"
    }

    var success: String {
        guard result.calls > 0 else { return "—" }
        if result.errors == 0 { return "100.00%" }
        let percent = 100 * Double(result.successes) / Double(result.calls)
        // Four decimals near 100%, rounded down, so 99.996% never reads as 100.00%.
        if percent >= 99.99 { return String(format: "%.4f%%", (percent * 10_000).rounded(.down) / 10_000) }
        return String(format: "%.2f%%", percent)
    }

    func ms(_ percentile: Double) -> String {
        result.successes > 0 ? String(format: "%.1f", Double(result.p(percentile)) / 1000) : "—"
    }

    var attempts: String { attemptsPerCall.map { String(format: "%.2f", $0) } ?? "—" }

    var share: String {
        guard mode == .fallback else { return "—" }
        return fallbackShare.map { String(format: "%.1f%%", $0 * 100) } ?? "—"
    }

    func count(_ key: String) -> String {
        guard mode != .direct else { return "—" }
        if key == "breaker_openings" { return breakerOpeningsSinceStart.map(String.init) ?? "n/a" }
        return resilienceSum(key).map(String.init) ?? "n/a"
    }

    /// Top failure names with counts, then what the row asks for besides.
    var noteText: String {
        var parts: [String] = []
        let top = result.failures.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        if !top.isEmpty {
            parts.append(top.prefix(3).map { "\($0.key)×\($0.value)" }.joined(separator: ", ")
                + (top.count > 3 ? ", +\(top.count - 3) more kinds" : ""))
        }
        if row.fault == .tokenBucket, let primary {
            let limited = primary.rateLimited.map(String.init) ?? "n/a"
            let run = primary.longestRateLimitedRun.map(String.init) ?? "n/a"
            var text = "fake: rate_limited \(limited), longest_rate_limited_run \(run)"
            if let rateLimited = primary.rateLimited {
                let admitted = primary.requests - rateLimited
                text += "; provider saw \(primary.requests) req for \(admitted) admitted"
                    + (admitted > 0 ? String(format: " (%.2f×)", Double(primary.requests) / Double(admitted)) : "")
            }
            parts.append(text)
        }
        if case .status503 = row.fault, let primary, primary.requests > 0 {
            // What the draw really gave: retries only can at best answer 1 − share^4 (retry_count 3).
            let share = Double(primary.byStatus["503"] ?? 0) / Double(primary.requests)
            var text = String(format: "503s: %.2f%% of the primary's requests", share * 100)
            if mode == .retries { text += String(format: " (4 tries answer at most %.2f%%)", (1 - pow(share, 4)) * 100) }
            parts.append(text)
        }
        if let last = primaryRateLast {
            parts.append(String(format: "primary %.1f req/s in the last ", last.rate)
                + Chaos.seconds(last.seconds) + " s")
        }
        return (parts + notes).joined(separator: "; ")
    }

    var json: [String: Any] {
        func value(_ x: Double?, _ digits: Double = 10_000) -> Any {
            x.map { ($0 * digits).rounded() / digits } ?? NSNull()
        }
        var o: [String: Any] = [
            "row": row.number, "row_name": row.name, "concurrency": concurrency, "mode": mode.rawValue,
            "seconds": seconds, "stream": row.stream, "error": error ?? NSNull(),
            "calls": result.calls, "successes": result.successes, "success_rate": value(successRate, 1_000_000),
            "calls_per_second": value(callsPerSecond, 10),
            "p50_ms": result.successes > 0 ? value(Double(result.p(50)) / 1000, 10) : NSNull(),
            "p99_ms": result.successes > 0 ? value(Double(result.p(99)) / 1000, 10) : NSNull(),
            "attempts_per_call": value(attemptsPerCall), "fallback_share": value(fallbackShare),
            "failures": result.failures,
            "primary_requests": primary.map { $0.requests as Any } ?? NSNull(),
            "primary_by_status": primary.map { $0.byStatus as Any } ?? NSNull(),
            "fallback_requests": fallback.map { $0.requests as Any } ?? NSNull(),
            "fallback_200s": fallback.map { $0.ok as Any } ?? NSNull(),
            "breaker_openings": breakerOpeningsSinceStart.map { $0 as Any } ?? NSNull(),
            "retries_refused_by_budget": resilienceSum("retries_refused_by_budget").map { $0 as Any } ?? NSNull(),
            "resilience": resilience.map { $0 as Any } ?? NSNull(),
            "notes": notes,
        ]
        if row.fault == .tokenBucket {
            o["token_bucket_rpm"] = tokenBucketRPM ?? NSNull()
            o["rate_limited"] = primary?.rateLimited ?? NSNull()
            o["longest_rate_limited_run"] = primary?.longestRateLimitedRun ?? NSNull()
        }
        if let last = primaryRateLast {
            o["primary_requests_per_second_last"] = ["seconds": last.seconds, "rate": value(last.rate, 10)]
        }
        return o
    }
}
