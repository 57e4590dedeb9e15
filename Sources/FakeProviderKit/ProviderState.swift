import NIOCore
import Synchronization

/// What a chat request is counted under; issued when the request has been read.
struct ChatTicket: Sendable {
    /// The stats generation the request started in; outcomes of older generations are not counted.
    let generation: UInt64
    /// Per-server sequence number, used to make ids unique.
    let sequence: UInt64
}

/// How a chat request ended.
enum ChatOutcome: Sendable {
    case completed
    case aborted
    case reset
}

/// The rate-limit header values for one answer.
struct RateLimitSnapshot: Sendable {
    var limitRequests: Int
    var limitTokens: Int
    var remainingRequests: Int
    var remainingTokens: Int
    var resetRequestsMs: Int
    var resetTokensMs: Int
    /// The values come from the key's token bucket, so a rate-limit error does not make them up.
    var enforced = false
}

/// What `ProviderState.decide` made of an accepted request.
enum Verdict: Sendable {
    /// Answer with `step` (from the script, a rolled fault or the default step).
    case answer(step: FaultStep, limits: RateLimitSnapshot)
    /// The key's token bucket refused it: answer 429.
    case rateLimited(TokenBucket.Refusal, limits: RateLimitSnapshot)
}

/// What a chat request needs to know about the personality before its body is looked at.
struct Admission: Sendable {
    /// The only key accepted, when the personality names one.
    var requiredKey: String?
    /// The step every request gets while the personality is down; nil when it is up.
    var downStep: FaultStep?
}

/// The shared, lock-protected state of one fake provider: the personality, the script, the fault generator,
/// the stats, the simulated rate-limit window, the token buckets per API key and the open connections. Every
/// method takes the lock once, briefly.
final class ProviderState: Sendable {
    /// Random per server, so ids from two fakes in one test never collide.
    let idPrefix: String
    /// Random per server, 16 hex digits, for `x-request-id`.
    let hexPrefix: String

    private struct Counters {
        var requests = 0
        var completed = 0
        var aborted = 0
        var resets = 0
        var byStatus: [Int: Int] = [:]
        var byAPI: [ProviderAPI: Int] = [:]
        var byModel: [String: Int] = [:]
        var toolsOffered: [String: Int] = [:]
        var usageTokens = 0
        var rateLimited = 0
        var longestRateLimitedRun = 0
        /// Requests the bucket refused since it last admitted one.
        var rateLimitedRun = 0
    }

    private struct State {
        var personality: Personality
        var script: [FaultStep] = []
        var rng: SplitMix64
        var counters = Counters()
        var inFlight = 0
        var generation: UInt64 = 0
        var sequence: UInt64 = 0
        var windowStart: NIODeadline
        var windowRequests = 0
        var windowTokens = 0
        /// The token buckets of `personality.tokenBucket`, by API key, made full on a key's first request.
        var buckets: [String: TokenBucket] = [:]
    }

    private let state: Mutex<State>
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    init(personality: Personality) {
        var system = SystemRandomNumberGenerator()
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        idPrefix = String((0..<16).map { _ in alphabet[Int(system.next() % UInt64(alphabet.count))] })
        hexPrefix = OpenAIWire.hex(system.next())
        let rng = SplitMix64(seed: personality.seed)
        state = Mutex(State(personality: personality, rng: rng, windowStart: .now()))
    }

    // MARK: Personality

    var personality: Personality {
        state.withLock { $0.personality }
    }

    /// Answers with `personality` from the next request on, its fault generator freshly seeded; the script,
    /// the stats and the rate-limit window are kept, and so are the token buckets if its `tokenBucket` is the
    /// same (otherwise every key starts again with a full bucket of the new size).
    func setPersonality(_ personality: Personality) {
        state.withLock { state in
            if personality.tokenBucket != state.personality.tokenBucket {
                state.buckets.removeAll()
            }
            state.personality = personality
            state.rng = SplitMix64(seed: personality.seed)
        }
    }

    // MARK: Script

    func appendScript(_ steps: [FaultStep]) -> Int {
        state.withLock { state in
            state.script.append(contentsOf: steps)
            return state.script.count
        }
    }

    func clearScript() {
        state.withLock { $0.script.removeAll() }
    }

    func scriptSnapshot() -> [FaultStep] {
        state.withLock { $0.script }
    }

    // MARK: Requests

    /// Counts a chat request to `api` as received and in flight, and says how the personality admits it and
    /// what the rate limits are before it is charged.
    func beginChat(api: ProviderAPI) -> (ticket: ChatTicket, admission: Admission, limits: RateLimitSnapshot) {
        state.withLock { state in
            state.counters.requests += 1
            state.counters.byAPI[api, default: 0] += 1
            state.inFlight += 1
            state.sequence += 1
            let personality = state.personality
            let admission = Admission(
                requiredKey: personality.requiredAPIKey,
                downStep: personality.down ? FaultStep(status: 503).overlaid(on: personality.defaultStep) : nil
            )
            Self.rollWindow(&state)
            let limits = Self.snapshot(state, personality)
            return (ChatTicket(generation: state.generation, sequence: state.sequence), admission, limits)
        }
    }

    /// Counts the model a request asked for, for requests that are refused or answered without `decide`.
    func recordModel(_ model: String, for ticket: ChatTicket) {
        state.withLock { state in
            guard state.generation == ticket.generation else { return }
            state.counters.byModel[model, default: 0] += 1
        }
    }

    /// Decides an accepted request: counts its model; with a token bucket, has `apiKey`'s bucket admit it
    /// (one request and `tokens` tokens) or refuse it; then picks its step (script first, then the personality)
    /// and charges the simulated rate-limit window with one request and `tokens` tokens. A refused request
    /// takes no step and charges nothing.
    func decide(tokens: Int, model: String, apiKey: String, tools: [String] = [],
                for ticket: ChatTicket) -> Verdict {
        state.withLock { state in
            let personality = state.personality
            let current = state.generation == ticket.generation
            if current {
                state.counters.byModel[model, default: 0] += 1
                for tool in tools { state.counters.toolsOffered[tool, default: 0] += 1 }
            }
            var bucket: TokenBucket?
            if let limits = personality.tokenBucket {
                let now = Duration.nanoseconds(Int64(clamping: NIODeadline.now().uptimeNanoseconds))
                var keyBucket = state.buckets[apiKey] ?? TokenBucket(limits: limits, now: now)
                let decision = keyBucket.admit(cost: tokens, now: now)
                state.buckets[apiKey] = keyBucket
                bucket = keyBucket
                if case .refused(let refusal) = decision {
                    if current {
                        state.counters.rateLimited += 1
                        state.counters.rateLimitedRun += 1
                        state.counters.longestRateLimitedRun = max(
                            state.counters.longestRateLimitedRun, state.counters.rateLimitedRun
                        )
                    }
                    Self.rollWindow(&state)
                    return .rateLimited(refusal, limits: Self.snapshot(state, personality, bucket: keyBucket))
                }
                if current {
                    state.counters.rateLimitedRun = 0
                }
            }
            let chosen: FaultStep
            if !state.script.isEmpty {
                chosen = state.script.removeFirst().overlaid(on: personality.defaultStep)
            } else if personality.faults.isEmpty {
                chosen = personality.defaultStep
            } else {
                let draw = state.rng.nextUnit()
                var cumulative = 0.0
                var rolled = personality.defaultStep
                for fault in personality.faults {
                    cumulative += fault.probability
                    if draw < cumulative {
                        rolled = fault.step.overlaid(on: personality.defaultStep)
                        break
                    }
                }
                chosen = rolled
            }
            Self.rollWindow(&state)
            state.windowRequests += 1
            state.windowTokens += tokens
            return .answer(step: chosen, limits: Self.snapshot(state, personality, bucket: bucket))
        }
    }

    /// Counts the tokens an answer reports using (what a provider bills).
    func recordUsage(_ usage: Usage, for ticket: ChatTicket) {
        state.withLock { state in
            guard state.generation == ticket.generation else { return }
            state.counters.usageTokens += usage.promptTokens + usage.completionTokens
        }
    }

    func recordStatus(_ status: Int, for ticket: ChatTicket) {
        state.withLock { state in
            guard state.generation == ticket.generation else { return }
            state.counters.byStatus[status, default: 0] += 1
        }
    }

    func finish(_ ticket: ChatTicket, _ outcome: ChatOutcome) {
        state.withLock { state in
            state.inFlight -= 1
            guard state.generation == ticket.generation else { return }
            switch outcome {
            case .completed: state.counters.completed += 1
            case .aborted: state.counters.aborted += 1
            case .reset: state.counters.resets += 1
            }
        }
    }

    // MARK: Stats

    func stats() -> FakeProviderStats {
        state.withLock { state in
            var byStatus: [String: Int] = [:]
            for (status, count) in state.counters.byStatus {
                byStatus[String(status)] = count
            }
            var byAPI: [String: Int] = [:]
            for (api, count) in state.counters.byAPI {
                byAPI[api.rawValue] = count
            }
            return FakeProviderStats(
                requests: state.counters.requests,
                completed: state.counters.completed,
                aborted: state.counters.aborted,
                resets: state.counters.resets,
                inFlight: state.inFlight,
                byStatus: byStatus,
                byAPI: byAPI,
                byModel: state.counters.byModel,
                rateLimited: state.counters.rateLimited,
                longestRateLimitedRun: state.counters.longestRateLimitedRun,
                toolsOffered: state.counters.toolsOffered,
                usageTokens: state.counters.usageTokens
            )
        }
    }

    /// Zeroes the counters. Requests still in flight stay in `inFlight` but their outcome is not counted.
    func resetStats() {
        state.withLock { state in
            state.counters = Counters()
            state.generation += 1
        }
    }

    /// Zeroes the counters, clears the script, reseeds the fault generator, empties the rate-limit window and
    /// fills every key's token bucket: as if freshly started.
    func resetAll() {
        state.withLock { state in
            state.counters = Counters()
            state.generation += 1
            state.script.removeAll()
            state.rng = SplitMix64(seed: state.personality.seed)
            state.windowStart = .now()
            state.windowRequests = 0
            state.windowTokens = 0
            state.buckets.removeAll()
        }
    }

    // MARK: Connections

    func register(_ channel: any Channel) {
        channels.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func unregister(_ channel: any Channel) {
        _ = channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func openChannels() -> [any Channel] {
        channels.withLock { Array($0.values) }
    }

    // MARK: Rate-limit window

    private static func rollWindow(_ state: inout State) {
        let now = NIODeadline.now()
        if now - state.windowStart >= .seconds(60) {
            state.windowStart = now
            state.windowRequests = 0
            state.windowTokens = 0
        }
    }

    /// OpenAI's reset values are the time until the bucket is full again, so they grow with what was used.
    /// The quantities `bucket` limits come from it (limit per minute, whole units left, time until full); the
    /// others from the informational window.
    private static func snapshot(
        _ state: State, _ personality: Personality, bucket: TokenBucket? = nil
    ) -> RateLimitSnapshot {
        let usedRequests = min(state.windowRequests, personality.rateLimitRequests)
        let usedTokens = min(state.windowTokens, personality.rateLimitTokens)
        var snapshot = RateLimitSnapshot(
            limitRequests: personality.rateLimitRequests,
            limitTokens: personality.rateLimitTokens,
            remainingRequests: personality.rateLimitRequests - usedRequests,
            remainingTokens: personality.rateLimitTokens - usedTokens,
            resetRequestsMs: usedRequests * 60_000 / personality.rateLimitRequests,
            resetTokensMs: usedTokens * 60_000 / personality.rateLimitTokens
        )
        if let requests = bucket?.requests {
            snapshot.limitRequests = requests.perMinute
            snapshot.remainingRequests = requests.remaining
            snapshot.resetRequestsMs = requests.untilFull.millisecondsRoundedUp
            snapshot.enforced = true
        }
        if let tokens = bucket?.tokens {
            snapshot.limitTokens = tokens.perMinute
            snapshot.remainingTokens = tokens.remaining
            snapshot.resetTokensMs = tokens.untilFull.millisecondsRoundedUp
            snapshot.enforced = true
        }
        return snapshot
    }
}
