import BreakwaterClient
import Foundation
import JournalTestKit
import RedisTestKit

/// `breakwater-bench --cost`: what one call costs the daemon, at saturation (provider latency 0), at each of
/// `--cost-concurrency` calls in flight, without and with a policy: CPU time (user + system of the daemon process ÷
/// calls answered in the window) and context switches of all its threads ÷ calls. Every daemon audits into a
/// private systemd-journald (JournalTestKit, as the end-to-end tests do), as one under systemd always does — a
/// daemon without a policy still writes each call's attempt and completion — so writing the audit trail is in
/// every figure and governed ÷ plain is what the policy adds; without root or journald they say so and the audit
/// entries go nowhere. With `rounds` above 1 the daemons run alternately that many times (this VM's CPU figures
/// move ±15–30% from minute to minute) and the medians are printed.
struct CostBench {
    var bin: String
    var dir: String
    var seconds: Double
    var warmup: Double
    var concurrencies: [Int]
    var stream: Bool
    /// `--cluster`: host against cluster rate limits instead of policy off against on.
    var cluster = false
    /// `--cluster-budgets`: a tenant budget in the daemon's ledger against one in the cluster store, both governed.
    var clusterBudgets = false
    /// `--cost-rounds`: runs of each daemon, alternating.
    var rounds = 1

    /// What one run of rows compares.
    enum Mode: String {
        case plain = "off"
        case governed = "on"
        /// A provider rate limit far above the load, held by the daemon (`scope: host`).
        case hostLimits = "host"
        /// The same limit through a real redis-server (`scope: cluster`).
        case clusterLimits = "cluster"
        /// Governed, the tenant's budget in the daemon's ledger (`budgets: {scope: host}`).
        case hostBudget = "host budget"
        /// Governed, the tenant's budget held and settled in a real redis-server (`scope: cluster`).
        case clusterBudget = "cluster budget"

        var policy: Bool { self == .governed || self == .hostBudget || self == .clusterBudget }
    }

    /// The limit of the rate-limit rows: 6 million requests a minute, far above the load, so it never binds and
    /// the rows show what enforcing it costs; leases are a tenth of a second of it (10,000 requests).
    static let benchRPM = 6_000_000

    struct Row {
        var mode: Mode
        var p50: UInt64
        var p99: UInt64
        var concurrency: Int
        var callsPerSecond: Double
        var cpuPerCall: Double
        var voluntaryPerCall: Double
        var involuntaryPerCall: Double
        var errors: Int
        /// Which of `rounds` this row comes from, from 0.
        var round = 0

        var switchesPerCall: Double { voluntaryPerCall + involuntaryPerCall }
    }

    func run() async throws {
        print("breakwater-bench --cost: \(stream ? "streamed" : "plain") calls, provider latency 0 ms, "
            + "\(seconds) s measured per row after \(warmup) s of warm-up")
        print("machine: " + Machine.line)
        print("command: " + Machine.command)
        let floor = try WakeFloor.measure()
        print(String(format: "this machine's floor: a thread woken by a byte on a Unix socket, answering it, costs %.1f µs "
            + "of CPU per wake-up (%.2f sleeps each; round trip %.1f µs); a call at 1 in flight wakes the daemon at "
            + "least twice (its request, its answer)", floor.cpuMicrosPerWake, floor.switchesPerWake,
            floor.roundTripMicros))
        var rows: [Row] = []
        let modes: [Mode] = cluster ? [.hostLimits, .clusterLimits]
            : clusterBudgets ? [.hostBudget, .clusterBudget] : [.plain, .governed]
        let (what, otherName, baseName) = cluster ? ("rate limits", "cluster", "host")
            : clusterBudgets ? ("budgets", "cluster budget", "host budget") : ("policy", "governed", "plain")
        for round in 0..<rounds {
            if rounds > 1 { print("\n=== round \(round + 1) of \(rounds)") }
            for mode in modes {
                rows += try await self.mode(mode).map { var row = $0; row.round = round; return row }
            }
        }
        print("\n| \(what) | in flight | calls/s | latency p50 / p99 | daemon CPU per call "
            + "| context switches per call (voluntary + involuntary) |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows {
            print(String(format: "| %@ | %d | %.0f | %d / %d µs | %.1f µs | %.2f (%.2f + %.2f) |", r.mode.rawValue,
                         r.concurrency, r.callsPerSecond, r.p50, r.p99, r.cpuPerCall, r.switchesPerCall,
                         r.voluntaryPerCall, r.involuntaryPerCall))
        }
        for c in concurrencies {
            // One ratio per round: the two daemons of a round ran minutes apart at most.
            let pairs: [(base: Row, other: Row)] = (0..<rounds).compactMap { round in
                guard let base = rows.first(where: { $0.mode == modes[0] && $0.concurrency == c && $0.round == round }),
                      let other = rows.first(where: { $0.mode == modes[1] && $0.concurrency == c && $0.round == round }),
                      base.cpuPerCall > 0 else { return nil }
                return (base, other)
            }
            if rounds == 1, let (base, other) = pairs.first {
                print(String(format: "%@ ÷ %@ at %d in flight: CPU %.2f×, context switches %.2f×, p50 latency %+d µs",
                             otherName, baseName, c,
                             other.cpuPerCall / base.cpuPerCall,
                             base.switchesPerCall > 0 ? other.switchesPerCall / base.switchesPerCall : 0,
                             Int(other.p50) - Int(base.p50)))
            } else if !pairs.isEmpty {
                let ratios = pairs.map { $0.other.cpuPerCall / $0.base.cpuPerCall }
                print(String(format: "at %d in flight, median of %d rounds: %@ %.1f µs (%.2f switches), %@ %.1f µs "
                    + "(%.2f switches); %@ ÷ %@ CPU per round %@, median %.2f×", c, pairs.count,
                    baseName, Self.median(pairs.map(\.base.cpuPerCall)), Self.median(pairs.map(\.base.switchesPerCall)),
                    otherName, Self.median(pairs.map(\.other.cpuPerCall)),
                    Self.median(pairs.map(\.other.switchesPerCall)), otherName, baseName,
                    ratios.map { String(format: "%.2f", $0) }.joined(separator: ", "), Self.median(ratios)))
            }
        }
    }

    /// The middle value (the mean of the two middle ones for an even count).
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    private func mode(_ mode: Mode) async throws -> [Row] {
        let policy = mode.policy
        var redis: RedisUnderTest?
        var extraConfig = ""
        var providerOptions = ""
        switch mode {
        case .plain: print("\n== policy off")
        case .governed, .hostBudget: break
        case .clusterBudget:
            redis = try RedisUnderTest()
            extraConfig = "cluster: {redis: \"unix://\(redis!.socket)\", timeout: 100ms}\n"
        case .hostLimits:
            print("\n== rate limits held by the daemon: rpm \(Self.benchRPM), scope host")
            providerOptions = ", rate_limits: {rpm: \(Self.benchRPM), scope: host}"
        case .clusterLimits:
            redis = try RedisUnderTest()
            print("\n== rate limits through redis-server on a Unix socket: rpm \(Self.benchRPM), scope cluster")
            providerOptions = ", rate_limits: {rpm: \(Self.benchRPM), scope: cluster}"
            extraConfig = "cluster: {redis: \"unix://\(redis!.socket)\", timeout: 100ms}\n"
        }
        defer { redis?.stop() }
        if policy {
            print("\n== policy on: token, scopes, tenant, budget" + (mode == .clusterBudget
                ? " (tenant's: scope cluster, in redis-server)" : mode == .hostBudget ? " (tenant's: scope host)" : ""))
        }
        // Every mode's daemon audits (a call's attempt and completion are entries with or without a policy).
        var journal: JournalHarness?
        do {
            journal = try JournalHarness.start()
            print("audit into a private systemd-journald (pid \(journal?.journaldPID.map(String.init) ?? "?"), socket "
                + "queue \(journal?.datagramQueueLength ?? 0) datagrams, as systemd sets net.unix.max_dgram_qlen; "
                + "this host's: \(JournalHarness.hostDatagramQueueLength()))")
        } catch {
            print("NO journald (\(error)): audit entries go nowhere, the audit cost is understated")
        }
        defer { journal?.stop() }
        let tag = "cost-" + mode.rawValue
        let (fake, _, config) = try Bench.startFake(bin: bin, dir: dir, latencyMs: 0, tag: tag,
                                                    extraConfig: extraConfig, providerOptions: providerOptions)
        defer { fake.stop() }
        let socket = dir + "/\(tag).sock"
        var arguments = ["--config", config, "--socket", socket, "--log-level", "warning"]
        if policy {
            let scope: String? = switch mode {
            case .hostBudget: "host"
            case .clusterBudget: "cluster"
            default: nil
            }
            try Bench.policyText(tenantBudget: scope).write(toFile: dir + "/policy.yaml", atomically: true,
                                                            encoding: .utf8)
            arguments += ["--policy", dir + "/policy.yaml"]
        }
        // Through nsenter into the journald's mount namespace; nsenter execs, so the pid is the daemon's.
        let (executable, argv) = journal?.command(bin + "/breakwaterd", arguments) ?? (bin + "/breakwaterd", arguments)
        let daemon = try Child(executable, argv, environment: ["BENCH_KEY": "bench-key"], log: dir + "/\(tag).log")
        defer { daemon.stop() }
        let client = BreakwaterClient(socketPath: socket, credential: policy ? Bench.agentToken : nil,
                                      clientName: "bench")
        defer { client.close() }
        try await waitUntilServing(client, daemon)
        let body = Bench.callBody
        let (action, tenant) = policy ? ("chat.reply", "acme") : (nil, nil)
        var rows: [Row] = []
        for concurrency in concurrencies {
            let window = CostWindow()
            let result = await ClosedLoop(concurrency: concurrency, warmup: warmup, seconds: seconds)
                .run(checkpoints: [0, seconds], atCheckpoint: { index in
                    window.read(index, cpu: daemon.cpuMicroseconds(), switches: daemon.contextSwitches())
                }) { [stream] in
                    if stream {
                        let s = try await client.stream(route: "default", body: body, action: action, tenant: tenant)
                        for try await _ in s {}
                    } else {
                        _ = try await client.send(route: "default", body: body, action: action, tenant: tenant)
                    }
                }
            let calls = Double(max(1, result.successes))
            let row = Row(mode: mode, p50: result.p(50), p99: result.p(99), concurrency: concurrency, callsPerSecond: Double(result.successes) / seconds,
                          cpuPerCall: Double(window.cpu) / calls, voluntaryPerCall: Double(window.voluntary) / calls,
                          involuntaryPerCall: Double(window.involuntary) / calls, errors: result.errors)
            rows.append(row)
            print(String(format: "%3d in flight: %7.0f calls/s, p50 %d µs, daemon CPU %6.1f µs per call, %5.2f context "
                + "switches per call (%.2f voluntary, %.2f involuntary)", concurrency, row.callsPerSecond, row.p50,
                row.cpuPerCall,
                row.switchesPerCall, row.voluntaryPerCall, row.involuntaryPerCall)
                + (result.errors > 0 ? ", \(result.errors) errors (first: \(result.firstError ?? "?"))" : ""))
        }
        if journal != nil, let status = try? await client.admin("status"),
           let o = try? JSONSerialization.jsonObject(with: Data(status)) as? [String: Any],
           let audit = o["audit"] as? [String: Any] {
            print("audit entries: \(audit["written"] ?? "?") written, \(audit["unwritten"] ?? "?") unwritten, "
                + "\(audit["dropped"] ?? "?") dropped")
        }
        return rows
    }
}

/// The daemon's CPU time and context switches at the measured window's start and end.
final class CostWindow: @unchecked Sendable {
    // Touched only from ClosedLoop's checkpoint callback, one call at a time, then read after the run.
    private var start = (cpu: 0, voluntary: 0, involuntary: 0)
    private var end = (cpu: 0, voluntary: 0, involuntary: 0)

    func read(_ checkpoint: Int, cpu: Int?, switches: (voluntary: Int, involuntary: Int)) {
        let sample = (cpu ?? 0, switches.voluntary, switches.involuntary)
        if checkpoint == 0 { start = sample } else { end = sample }
    }

    var cpu: Int { end.cpu - start.cpu }
    var voluntary: Int { end.voluntary - start.voluntary }
    var involuntary: Int { end.involuntary - start.involuntary }
}
