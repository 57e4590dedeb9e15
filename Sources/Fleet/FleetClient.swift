import Crypto
import Governance
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import PosixThread
import Resilience
import Synchronization

/// A provider key's cluster limits as the store's GCRA runs them: microseconds one unit uses up, and how far
/// ahead of now the arrival time may run (the burst, as `KeyPool.Limits.burst(of:)` sizes it for the local
/// limiter). An interval of 0 is no limit.
public struct FleetRate: Sendable, Hashable {
    public var requestInterval: Double
    public var requestTolerance: Double
    public var tokenInterval: Double
    public var tokenTolerance: Double

    public init(_ limits: KeyPool.Limits) {
        func spec(_ rate: Int?) -> (Double, Double) {
            guard let rate, rate > 0 else { return (0, 0) }
            let interval = 60_000_000 / Double(rate)
            return (interval, interval * Double(limits.burst(of: rate)))
        }
        (requestInterval, requestTolerance) = spec(limits.rpm)
        (tokenInterval, tokenTolerance) = spec(limits.tpm)
    }

    /// `rpm` requests and `tpm` tokens a minute, a bucket holding `burstSeconds` of each (at least one unit).
    public init(rpm: Int?, tpm: Int?, burstSeconds: Double) {
        self.init(KeyPool.Limits(rpm: rpm, tpm: tpm, burstSeconds: burstSeconds))
    }

    /// How long the store keeps a key's state untouched: its bucket refills fully well within this.
    var ttlMilliseconds: Int { Int(max(requestTolerance, tokenTolerance) / 1000) + 120_000 }
}

/// Requests and tokens: the lease bookkeeping's own type.
public typealias FleetUnits = ClusterShare.Units

/// What the store answered to a lease: units granted (zero, or at least what was needed), and how long until
/// they may be used — or, with nothing granted, until the need fits.
public struct FleetGrant: Sendable, Hashable {
    public var granted: FleetUnits
    public var wait: Duration
}

/// What the store answered to a budget hold.
public enum BudgetHoldAnswer: Sendable, Hashable {
    /// Held; per budget, what is now used and held there in all.
    case held([Usage])
    /// `budget` (an index into the budgets asked for) would pass its cap in `unit`, with `used` and `reserved`.
    case refused(budget: Int, unit: BudgetExceeded.Unit, used: Int64, reserved: Int64)
}

/// Whether the store answers.
public enum FleetHealth: Sendable, Equatable {
    /// Answering; `liveDaemons` daemons (this one included) said they were alive within the last few heartbeats.
    case reachable(liveDaemons: Int)
    case unreachable(RedisFailure)
}

/// Connection settings for the cluster store (the config's `cluster:`).
public struct FleetSettings: Sendable {
    public var endpoint: RedisEndpoint
    /// From a credential, never the config file.
    public var password: String?
    /// Every key the daemons write starts with this (default `breakwater:`), so one Redis can serve others too.
    public var keyPrefix: String
    /// The longest any connect, command or answer may take; past it the store counts as unreachable.
    public var timeout: Duration
    /// This daemon's name among the live daemons (default host name and PID).
    public var daemonID: String
    /// How often the daemon says it is alive and, when the store is unreachable, tries it again.
    public var heartbeat: Duration

    public init(endpoint: RedisEndpoint, password: String?, keyPrefix: String, timeout: Duration, daemonID: String,
                heartbeat: Duration = .seconds(1)) {
        self.endpoint = endpoint
        self.password = password
        self.keyPrefix = keyPrefix
        self.timeout = timeout
        self.daemonID = daemonID
        self.heartbeat = heartbeat
    }
}

/// The daemon's side of the cluster store: one thread with one hiredis connection, running the `FleetScript`s in
/// the order asked. Nothing here blocks a caller: each request is queued and its answer, if it has one, handed
/// to a completion on this thread. The thread also says the daemon is alive every `heartbeat`, which both counts
/// the live daemons (for the share each takes when the store is gone) and, while the store is unreachable, is
/// the only thing that tries it again — so calls never wait on a store that is down.
public final class FleetClient: Sendable {
    private struct Queue: ~Copyable {
        var jobs: [@Sendable (Worker) -> Void] = []
        var stopping = false
    }

    private let settings: FleetSettings
    private let queue = Mutex(Queue())
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let health: Mutex<FleetHealth?> = Mutex(nil)
    private let onHealth: @Sendable (FleetHealth) -> Void

    /// Starts the thread. `onHealth` is called on it whenever the store becomes reachable or unreachable, and
    /// after every heartbeat that counted the live daemons.
    public init(settings: FleetSettings, onHealth: @escaping @Sendable (FleetHealth) -> Void)
        throws(PosixThread.SpawnError) {
        self.settings = settings
        self.onHealth = onHealth
        // hiredis writes with write(2), which raises SIGPIPE on a connection the store closed; the daemon wants
        // the EPIPE instead (a store that went away is an error to report, not a reason to die).
        signal(SIGPIPE, SIG_IGN)
        let worker = Worker(settings: settings)
        try PosixThread.detached { [self] in run(worker) }
    }

    /// The last thing the store's answers (or silence) said; nil before the first heartbeat.
    public var lastHealth: FleetHealth? { health.withLock { $0 } }

    /// The store's name for a provider key: the prefix, the provider, and a digest of the key (never the key).
    public func rateKey(provider: String, apiKey: String) -> String {
        settings.keyPrefix + "rate:" + provider + ":" + hex(SHA256.hash(data: Array(apiKey.utf8)).prefix(8))
    }

    /// Leases between `need` and `want` of the key's rate; `need` alone for up to `maxWait` ahead when it does
    /// not fit now.
    public func acquire(_ key: String, rate: FleetRate, need: FleetUnits, want: FleetUnits, debtTokens: Int,
                        maxWait: Duration = .zero,
                        done: @escaping @Sendable (Result<FleetGrant, RedisFailure>) -> Void) {
        let args = [rate.requestInterval, rate.requestTolerance, rate.tokenInterval, rate.tokenTolerance].map(Self.arg)
            + [need.requests, need.tokens, max(need.requests, want.requests), max(need.tokens, want.tokens),
               debtTokens, rate.ttlMilliseconds, Int(Self.micros(maxWait))].map { String($0) }
        submit { worker in
            done(worker.run(.acquire, key: key, args).flatMap { reply in
                guard let a = reply.array, a.count == 3, let r = a[0].int, let t = a[1].int, let w = a[2].int else {
                    return .failure(.unexpected("acquire answered \(reply)"))
                }
                return .success(FleetGrant(granted: FleetUnits(requests: Int(r), tokens: Int(t)),
                                           wait: .microseconds(max(0, w))))
            })
        }
    }

    /// Gives back what a lease granted and no call used.
    public func giveBack(_ key: String, rate: FleetRate, _ units: FleetUnits) {
        let args = [Self.arg(rate.requestInterval), Self.arg(rate.tokenInterval), String(units.requests),
                    String(units.tokens)]
        submit { worker in _ = worker.run(.giveBack, key: key, args) }
    }

    /// Holds the key's cluster limits to what the provider said is left.
    public func remaining(_ key: String, rate: FleetRate, requests: Int?, tokens: Int?) {
        let args = [rate.requestInterval, rate.requestTolerance, rate.tokenInterval, rate.tokenTolerance].map(Self.arg)
            + [requests ?? -1, tokens ?? -1, rate.ttlMilliseconds].map { String($0) }
        submit { worker in _ = worker.run(.remaining, key: key, args) }
    }

    /// Rests the key on every daemon for `duration`.
    public func rest(_ key: String, rate: FleetRate, for duration: Duration) {
        let args = [String(Self.micros(duration)), String(rate.ttlMilliseconds)]
        submit { worker in _ = worker.run(.rest, key: key, args) }
    }

    // MARK: Cluster budgets

    /// The store's key names of a budget (its hash, and its set of hold expiries or of charges taken).
    private func budgetKeys(_ budgets: [ClusterBudget.Key], second: String) -> [String] {
        budgets.flatMap { b in
            let name = settings.keyPrefix + b.storeName
            return [name, name + second]
        }
    }

    /// How long the store keeps a budget untouched: two days past the end of its period (for `breakwater` and
    /// people reading it), then it is forgotten.
    private static func keepMilliseconds(_ b: ClusterBudget.Key, wallNow: Double) -> String {
        String(Int64(max(60, b.endsAt - wallNow + 2 * 86_400) * 1000))
    }

    /// Holds `ask` against every one of `budgets` (all-or-nothing) for at most `lifetime`, under `id`.
    public func holdBudgets(_ budgets: [ClusterBudget], id: String, ask: Usage, lifetime: Duration, wallNow: Double,
                            done: @escaping @Sendable (Result<BudgetHoldAnswer, RedisFailure>) -> Void) {
        var args = [id, String(max(1, lifetime.nanoseconds / 1_000_000)), String(max(0, ask.tokens)),
                    String(max(0, ask.microUSD))]
        for b in budgets {
            args += [String(b.limit.tokens ?? -1), String(b.limit.microUSD ?? -1),
                     Self.keepMilliseconds(b.id, wallNow: wallNow)]
        }
        let keys = budgetKeys(budgets.map(\.id), second: "|holds")
        submit { [args] worker in
            done(worker.run(.budgetHold, keys: keys, args).flatMap { reply in
                guard let a = reply.array?.compactMap(\.int), a.count == (reply.array?.count ?? -1), let ok = a.first
                else { return .failure(.unexpected("budget hold answered \(reply)")) }
                if ok == 1, a.count == 1 + 2 * budgets.count {
                    return .success(.held(budgets.indices.map { Usage(tokens: a[1 + 2 * $0], microUSD: a[2 + 2 * $0]) }))
                }
                if ok == 0, a.count == 5 {
                    return .success(.refused(budget: Int(a[1]) - 1, unit: a[2] == 1 ? .tokens : .microUSD,
                                             used: a[3], reserved: a[4]))
                }
                return .failure(.unexpected("budget hold answered \(reply)"))
            })
        }
    }

    /// Replaces hold `id` with what the call used (`Usage()` gives it back). Safe to send again.
    public func settleBudgets(_ budgets: [ClusterBudget.Key], id: String, used: Usage,
                              done: @escaping @Sendable (Bool) -> Void) {
        let keys = budgetKeys(budgets, second: "|holds")
        let args = [id, String(max(0, used.tokens)), String(max(0, used.microUSD))]
        submit { worker in
            if case .success = worker.run(.budgetSettle, keys: keys, args) { done(true) } else { done(false) }
        }
    }

    /// Adds usage taken on this daemon's own share while the store was unreachable, once per `id`.
    public func chargeBudgets(_ budgets: [ClusterBudget.Key], id: String, used: Usage, wallNow: Double,
                              done: @escaping @Sendable (Bool) -> Void) {
        let keys = budgetKeys(budgets, second: "|charges")
        let args = [id, String(max(0, used.tokens)), String(max(0, used.microUSD))]
            + budgets.map { Self.keepMilliseconds($0, wallNow: wallNow) }
        submit { worker in
            if case .success = worker.run(.budgetCharge, keys: keys, args) { done(true) } else { done(false) }
        }
    }

    /// Stops the thread after what is queued (leaving the set of live daemons on the way), waiting at most
    /// `timeout` for it.
    public func shutdown(timeout: Duration = .seconds(2)) {
        queue.withLock { $0.stopping = true }
        wake.signal()
        _ = stopped.wait(timeout: .now() + .milliseconds(Int(timeout.nanoseconds / 1_000_000)))
    }

    private func submit(_ job: @escaping @Sendable (Worker) -> Void) {
        queue.withLock { $0.jobs.append(job) }
        wake.signal()
    }

    private static func micros(_ d: Duration) -> Int64 { max(0, d.nanoseconds / 1000) }

    private static func arg(_ x: Double) -> String {
        // Three decimals of a microsecond are far finer than any limit needs, and never in exponent notation.
        let scaled = (x * 1000).rounded()
        let whole = Int64(scaled) / 1000
        let frac = Int64(scaled) % 1000
        let f = String(frac)
        return "\(whole)." + String(repeating: "0", count: 3 - f.count) + f
    }

    private func run(_ worker: Worker) {
        let beatMs = Int(settings.heartbeat.nanoseconds / 1_000_000)
        var nextBeat = DispatchTime.now()
        while true {
            if DispatchTime.now() >= nextBeat {
                heartbeat(worker, liveWithin: beatMs * 3)
                nextBeat = .now() + .milliseconds(beatMs)
            }
            _ = wake.wait(timeout: nextBeat)
            let (jobs, stopping) = queue.withLock { q -> ([@Sendable (Worker) -> Void], Bool) in
                defer { q.jobs.removeAll(keepingCapacity: true) }
                return (q.jobs, q.stopping)
            }
            for job in jobs { job(worker) }
            report(worker.failure.map(FleetHealth.unreachable), onlyChanges: true)
            if stopping {
                if worker.failure == nil {
                    _ = worker.connection.command(["ZREM", settings.keyPrefix + "daemons", settings.daemonID]
                        .map { Array($0.utf8) })
                }
                worker.connection.disconnect()
                stopped.signal()
                return
            }
        }
    }

    private func heartbeat(_ worker: Worker, liveWithin ms: Int) {
        worker.failure = nil  // the one place an unreachable store is tried again
        switch worker.run(.heartbeat, key: settings.keyPrefix + "daemons", [settings.daemonID, String(ms)]) {
        case .success(let reply):
            if let n = reply.int { report(.reachable(liveDaemons: max(1, Int(n))), onlyChanges: false) }
        case .failure(let failure):
            report(.unreachable(failure), onlyChanges: false)
        }
    }

    private func report(_ new: FleetHealth?, onlyChanges: Bool) {
        guard let new else { return }
        let changed = health.withLock { h -> Bool in
            let was = h
            h = new
            switch (was, new) {
            case (.reachable?, .reachable), (.unreachable?, .unreachable): return false
            default: return true
            }
        }
        if changed || !onlyChanges { onHealth(new) }
    }
}

/// The connection and what the thread knows about it; used only on the fleet client's thread.
final class Worker: @unchecked Sendable {
    let connection: RedisConnection
    /// The last failure since the last heartbeat: while set, commands are not tried (they would each wait out
    /// the timeout on a store that is down).
    var failure: RedisFailure?

    init(settings: FleetSettings) {
        connection = RedisConnection(endpoint: settings.endpoint, password: settings.password,
                                     timeout: settings.timeout)
    }

    func run(_ script: FleetScript, key: String, _ args: [String]) -> Result<RedisReply, RedisFailure> {
        run(script, keys: [key], args)
    }

    func run(_ script: FleetScript, keys: [String], _ args: [String]) -> Result<RedisReply, RedisFailure> {
        if let failure { return .failure(failure) }
        let tail = [String(keys.count)] + keys + args
        var result = connection.command(([ "EVALSHA", script.sha] + tail).map { Array($0.utf8) })
        if case .success(.error(let why)) = result, why.hasPrefix("NOSCRIPT") {
            result = connection.command((["EVAL", script.source] + tail).map { Array($0.utf8) })
        }
        switch result {
        case .success(.error(let why)):
            // A script error is a bug or a store that is not Redis ≥ 5; said once, never with the arguments.
            let failure = RedisFailure.server(String(why.prefix(200)))
            self.failure = failure
            return .failure(failure)
        case .failure(let failure):
            self.failure = failure
            return .failure(failure)
        case .success(let reply):
            return .success(reply)
        }
    }
}

/// Lower-case hex of `bytes` (the store's key names, the scripts' SHA-1).
func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}
