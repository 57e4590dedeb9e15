import Foundation

/// A fault that happens to a request with the given probability, when no scripted step is queued.
public struct ProbabilisticFault: Codable, Sendable, Equatable {
    /// Chance in 0...1 that a request gets this fault.
    public var probability: Double
    /// The step used for that request, laid over the personality's default step.
    public var step: FaultStep

    /// Creates a fault that hits a request with `probability`.
    public init(probability: Double, step: FaultStep) {
        self.probability = probability
        self.step = step
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case probability, step
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            probability: try container.decode(Double.self, forKey: .probability),
            step: try container.decode(FaultStep.self, forKey: .step)
        )
    }
}

/// How the fake provider behaves when no scripted step is queued: a default step plus random faults.
///
/// Faults are rolled with a generator seeded by `seed`, so the same sequence of requests meets the same faults
/// on every run. In JSON: `{"name", "default_step", "faults": [{"probability", "step"}], "seed", "down",
/// "required_api_key", "ratelimit_limit_requests", "ratelimit_limit_tokens", "token_bucket":
/// {"requests_per_minute", "tokens_per_minute", "burst_seconds"}}`, every key optional. For example
/// `{"faults": [{"probability": 0.3, "step": {"status": 503}}, {"probability": 0.2, "step": {"status": 429,
/// "retry_after": "1"}}]}` fails half the requests and answers the rest normally.
///
/// The `ratelimit_limit_*` values only fill in the rate-limit headers; `token_bucket` really limits, per API
/// key, as providers do: `{"token_bucket": {"requests_per_minute": 600, "burst_seconds": 1}}` lets each key
/// send 10 requests at once and then one every 100 ms, and answers the rest 429 in the API's shape with
/// `Retry-After`, `retry-after-ms` and the key's rate-limit headers. The two cannot be given together.
public struct Personality: Codable, Sendable, Equatable {
    /// A label for logs and reports.
    public var name: String
    /// What every request gets unless a scripted step or a rolled fault says otherwise.
    public var defaultStep: FaultStep
    /// Random faults, checked in order; their probabilities must add up to at most 1.
    public var faults: [ProbabilisticFault]
    /// Seed of the generator that rolls `faults`.
    public var seed: UInt64
    /// The provider is down: every chat request is answered 503 in its API's shape (OpenAI's overload error,
    /// Anthropic's `overloaded_error`, Gemini's `UNAVAILABLE`, ...) before its key is checked, without taking a
    /// scripted step or charging the rate limit. The answer still follows `default_step`'s timing and breakage,
    /// so `"default_step": {"reset_after_chunks": 0}` makes a down provider reset every connection instead.
    public var down: Bool
    /// When set, only this key is accepted (in whichever header or parameter the API takes it); otherwise any
    /// non-empty key is.
    public var requiredAPIKey: String?
    /// Value of `x-ratelimit-limit-requests` (requests per minute), informational: never enforced.
    public var rateLimitRequests: Int
    /// Value of `x-ratelimit-limit-tokens` (tokens per minute), informational: never enforced.
    public var rateLimitTokens: Int
    /// Rates enforced per API key, checked after the key and the body and before the script and the faults;
    /// nil enforces nothing. A rate it leaves out keeps the informational `rateLimitRequests` or
    /// `rateLimitTokens` headers.
    public var tokenBucket: TokenBucketLimits?

    /// Creates a personality; the defaults answer every request promptly with 200.
    public init(
        name: String = "custom",
        defaultStep: FaultStep = FaultStep(),
        faults: [ProbabilisticFault] = [],
        seed: UInt64 = 0,
        down: Bool = false,
        requiredAPIKey: String? = nil,
        rateLimitRequests: Int = 10_000,
        rateLimitTokens: Int = 2_000_000,
        tokenBucket: TokenBucketLimits? = nil
    ) {
        self.name = name
        self.defaultStep = defaultStep
        self.faults = faults
        self.seed = seed
        self.down = down
        self.requiredAPIKey = requiredAPIKey
        self.rateLimitRequests = rateLimitRequests
        self.rateLimitTokens = rateLimitTokens
        self.tokenBucket = tokenBucket
    }

    /// Answers every request at once with 200 and the echoed completion.
    public static let healthy = Personality(name: "healthy")

    /// A provider that is down: every request gets 503.
    public static let down = Personality(name: "down", down: true)

    /// A provider having a bad day: 30% of requests get 503, 20% get 429 with `Retry-After: 1`.
    public static func flaky(seed: UInt64 = 42) -> Personality {
        Personality(
            name: "flaky",
            faults: [
                ProbabilisticFault(probability: 0.3, step: FaultStep(status: 503)),
                ProbabilisticFault(probability: 0.2, step: FaultStep(status: 429, retryAfter: "1")),
            ],
            seed: seed
        )
    }

    /// Decodes and validates a personality from its JSON form.
    public init(jsonData: Data) throws {
        do {
            self = try JSONDecoder().decode(Personality.self, from: jsonData)
        } catch let error as DecodingError {
            throw FakeProviderError.invalidPersonality(String(describing: error))
        }
        try validate()
    }

    /// Reads a personality from a JSON file.
    public init(contentsOfFile path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw FakeProviderError.invalidPersonality("cannot read \(path): \(error.localizedDescription)")
        }
        try self.init(jsonData: data)
    }

    /// Throws when the personality cannot be served: bad probabilities or rate limits, or a token bucket
    /// together with informational limits that differ from the defaults.
    public func validate() throws {
        var total = 0.0
        for fault in faults {
            guard (0...1).contains(fault.probability) else {
                throw FakeProviderError.invalidPersonality("fault probability \(fault.probability) is not in 0...1")
            }
            total += fault.probability
        }
        guard total <= 1 + 1e-9 else {
            throw FakeProviderError.invalidPersonality("fault probabilities add up to \(total), more than 1")
        }
        guard rateLimitRequests > 0, rateLimitTokens > 0 else {
            throw FakeProviderError.invalidPersonality("rate limits must be positive")
        }
        if let tokenBucket {
            let defaults = Personality()
            guard rateLimitRequests == defaults.rateLimitRequests, rateLimitTokens == defaults.rateLimitTokens else {
                throw Self.bucketWithInformationalLimits
            }
            try tokenBucket.validate()
        }
        if let status = defaultStep.status, !(200...599).contains(status) {
            throw FakeProviderError.invalidPersonality("default_step status \(status) is not an HTTP status")
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name
        case defaultStep = "default_step"
        case faults
        case seed
        case down
        case requiredAPIKey = "required_api_key"
        case rateLimitRequests = "ratelimit_limit_requests"
        case rateLimitTokens = "ratelimit_limit_tokens"
        case tokenBucket = "token_bucket"
    }

    private static let bucketWithInformationalLimits = FakeProviderError.invalidPersonality(
        "token_bucket cannot be combined with ratelimit_limit_requests or ratelimit_limit_tokens: "
            + "the bucket's rates are the limits"
    )

    /// Writes every key, except the informational limits when there is a token bucket (which the decoder
    /// would refuse beside it), so an encoded personality decodes back to itself.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(defaultStep, forKey: .defaultStep)
        try container.encode(faults, forKey: .faults)
        try container.encode(seed, forKey: .seed)
        try container.encode(down, forKey: .down)
        try container.encodeIfPresent(requiredAPIKey, forKey: .requiredAPIKey)
        if let tokenBucket {
            try container.encode(tokenBucket, forKey: .tokenBucket)
        } else {
            try container.encode(rateLimitRequests, forKey: .rateLimitRequests)
            try container.encode(rateLimitTokens, forKey: .rateLimitTokens)
        }
    }

    public init(from decoder: any Decoder) throws {
        try UnknownKeys.reject(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = Personality()
        let tokenBucket = try container.decodeIfPresent(TokenBucketLimits.self, forKey: .tokenBucket)
        if tokenBucket != nil, container.contains(.rateLimitRequests) || container.contains(.rateLimitTokens) {
            throw Self.bucketWithInformationalLimits
        }
        self.init(
            name: try container.decodeIfPresent(String.self, forKey: .name) ?? defaults.name,
            defaultStep: try container.decodeIfPresent(FaultStep.self, forKey: .defaultStep) ?? FaultStep(),
            faults: try container.decodeIfPresent([ProbabilisticFault].self, forKey: .faults) ?? [],
            seed: try container.decodeIfPresent(UInt64.self, forKey: .seed) ?? defaults.seed,
            down: try container.decodeIfPresent(Bool.self, forKey: .down) ?? false,
            requiredAPIKey: try container.decodeIfPresent(String.self, forKey: .requiredAPIKey),
            rateLimitRequests: try container.decodeIfPresent(Int.self, forKey: .rateLimitRequests)
                ?? defaults.rateLimitRequests,
            rateLimitTokens: try container.decodeIfPresent(Int.self, forKey: .rateLimitTokens)
                ?? defaults.rateLimitTokens,
            tokenBucket: tokenBucket
        )
    }
}
