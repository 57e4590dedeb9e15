/// The personality's `token_bucket` key: the rates the fake enforces, per API key, the way providers limit
/// requests and tokens per minute.
///
/// In JSON: `{"requests_per_minute": N, "tokens_per_minute": M, "burst_seconds": S}`. Each rate is optional but
/// at least one must be given; a rate left out is not limited (its headers stay informational).
/// `burst_seconds` (default 60) is how many seconds of the rate a bucket holds: 60 lets a minute's worth
/// through at once, 1 lets only a second's worth through, so a large per-minute limit bites within seconds
/// (OpenAI enforces its per-minute limits over shorter periods).
public struct TokenBucketLimits: Codable, Sendable, Equatable {
    /// Requests per minute per key; nil leaves requests unlimited.
    public var requestsPerMinute: Int?
    /// Tokens per minute per key, a request costing its prompt tokens plus its `max_tokens`; nil leaves tokens
    /// unlimited.
    public var tokensPerMinute: Int?
    /// Seconds of each rate a bucket holds when full (at least one request or token).
    public var burstSeconds: Double

    /// The longest burst accepted: an hour of the rate.
    public static let maxBurstSeconds = 3600.0

    /// Creates limits; give at least one rate.
    public init(requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil, burstSeconds: Double = 60) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.burstSeconds = burstSeconds
    }

    /// Throws when the limits cannot be enforced: no rate, a rate not positive, a burst out of range.
    public func validate() throws {
        guard requestsPerMinute != nil || tokensPerMinute != nil else {
            throw FakeProviderError.invalidPersonality(
                "token_bucket needs requests_per_minute, tokens_per_minute or both"
            )
        }
        for (key, rate) in [("requests_per_minute", requestsPerMinute), ("tokens_per_minute", tokensPerMinute)] {
            if let rate, rate <= 0 {
                throw FakeProviderError.invalidPersonality("token_bucket \(key) must be positive, not \(rate)")
            }
        }
        guard burstSeconds.isFinite, burstSeconds > 0, burstSeconds <= Self.maxBurstSeconds else {
            throw FakeProviderError.invalidPersonality(
                "token_bucket burst_seconds must be more than 0 and at most \(Int(Self.maxBurstSeconds)), "
                    + "not \(burstSeconds)"
            )
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case requestsPerMinute = "requests_per_minute"
        case tokensPerMinute = "tokens_per_minute"
        case burstSeconds = "burst_seconds"
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            requestsPerMinute: try container.decodeIfPresent(Int.self, forKey: .requestsPerMinute),
            tokensPerMinute: try container.decodeIfPresent(Int.self, forKey: .tokensPerMinute),
            burstSeconds: try container.decodeIfPresent(Double.self, forKey: .burstSeconds) ?? 60
        )
    }
}

/// One API key's buckets, requests and tokens, refilled continuously: each holds
/// `rate / 60 × burst_seconds` (at least 1), gains `rate / 60` a second and starts full. A request is admitted
/// when there is a whole request and its token cost in the buckets, and then takes both.
///
/// Pure: the time is passed in (any monotonic clock, from any origin), so tests run it in virtual time. The
/// arithmetic is exact integers, so a request sent after exactly the wait `admit` named is admitted.
struct TokenBucket: Sendable, Equatable {
    /// Which of the two buckets.
    enum Quantity: Sendable, Equatable {
        case requests
        case tokens
    }

    /// Why a request was refused.
    struct Refusal: Sendable, Equatable {
        /// The bucket that ran short; when both did, the one that takes longer to fill up to the request.
        var quantity: Quantity
        /// How long until one request and its tokens fit; nil when the cost is more tokens than the bucket
        /// holds even when full, so waiting never helps.
        var wait: Duration?
    }

    /// What `admit` decided.
    enum Decision: Sendable, Equatable {
        case admitted
        case refused(Refusal)
    }

    /// One bucket. Levels are kept in units of 1/60,000,000,000 of a request or token, in which a rate of
    /// `perMinute` adds exactly `perMinute` a nanosecond.
    struct Meter: Sendable, Equatable {
        /// One request or token in the meter's units: 60 s in nanoseconds.
        static let unit: Int128 = 60_000_000_000

        /// The rate, per minute.
        let perMinute: Int
        /// The level when full, in `unit`s.
        let capacity: Int128
        /// The level now, in `unit`s.
        fileprivate(set) var level: Int128

        init(perMinute: Int, burst: Duration) {
            self.perMinute = perMinute
            capacity = max(Self.unit, Int128(perMinute) * Int128(burst.wholeNanoseconds))
            level = capacity
        }

        /// Whole requests or tokens in the bucket.
        var remaining: Int { Int(clamping: level / Self.unit) }

        /// Whole requests or tokens the bucket holds when full.
        var size: Int { Int(clamping: capacity / Self.unit) }

        /// Time until the bucket is full again.
        var untilFull: Duration { Self.time(toAdd: capacity - level, perMinute: perMinute) }

        fileprivate mutating func refill(elapsedNanoseconds: Int64) {
            level = min(capacity, level + Int128(elapsedNanoseconds) * Int128(perMinute))
        }

        /// Time until `amount` fits: zero when it does now, nil when it never does.
        fileprivate func wait(for amount: Int) -> Duration? {
            let needed = Int128(amount) * Self.unit
            guard needed <= capacity else { return nil }
            return needed <= level ? .zero : Self.time(toAdd: needed - level, perMinute: perMinute)
        }

        fileprivate mutating func take(_ amount: Int) {
            level -= Int128(amount) * Self.unit
        }

        /// Whole nanoseconds, rounded up, for `amount` units to flow in at `perMinute` a nanosecond.
        private static func time(toAdd amount: Int128, perMinute: Int) -> Duration {
            let rate = Int128(perMinute)
            return .nanoseconds(Int64(clamping: (amount + rate - 1) / rate))
        }
    }

    /// The request bucket; nil when requests are not limited.
    private(set) var requests: Meter?
    /// The token bucket; nil when tokens are not limited.
    private(set) var tokens: Meter?
    /// When the levels were last brought up to date.
    private(set) var updated: Duration

    /// Full buckets for `limits` at time `now`.
    init(limits: TokenBucketLimits, now: Duration) {
        let burst = Duration.nanoseconds(Int64((limits.burstSeconds * 1e9).rounded()))
        requests = limits.requestsPerMinute.map { Meter(perMinute: $0, burst: burst) }
        tokens = limits.tokensPerMinute.map { Meter(perMinute: $0, burst: burst) }
        updated = now
    }

    /// Refills the buckets up to `now`, then takes one request and `cost` tokens if both are there. A refused
    /// request takes nothing. Afterwards `requests` and `tokens` show the levels at `now`.
    mutating func admit(cost: Int, now: Duration) -> Decision {
        refill(now: now)
        let cost = max(0, cost)
        let shortfalls = [
            requests.map { Refusal(quantity: .requests, wait: $0.wait(for: 1)) },
            tokens.map { Refusal(quantity: .tokens, wait: $0.wait(for: cost)) },
        ].compactMap { $0 }.filter { $0.wait != .zero }
        guard let first = shortfalls.first else {
            requests?.take(1)
            tokens?.take(cost)
            return .admitted
        }
        return .refused(shortfalls.dropFirst().reduce(first) { Self.longer($1.wait, than: $0.wait) ? $1 : $0 })
    }

    /// Whether wait `a` is longer than `b`, nil being forever.
    private static func longer(_ a: Duration?, than b: Duration?) -> Bool {
        switch (a, b) {
        case (nil, _): b != nil
        case (_, nil): false
        case (let a?, let b?): a > b
        }
    }

    /// Brings the levels up to `now`; a time before the last update changes nothing.
    private mutating func refill(now: Duration) {
        guard now > updated else { return }
        let elapsed = (now - updated).wholeNanoseconds
        updated = now
        requests?.refill(elapsedNanoseconds: elapsed)
        tokens?.refill(elapsedNanoseconds: elapsed)
    }
}

extension Duration {
    /// The duration in whole nanoseconds, rounded down (saturating at `Int64.max`).
    var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        return whole + attoseconds / 1_000_000_000
    }

    /// The duration in whole milliseconds, rounded up.
    var millisecondsRoundedUp: Int {
        let nanoseconds = wholeNanoseconds
        return Int(nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 > 0 ? 1 : 0))
    }
}
