import BreakwaterWire
import CurlTransport
import Governance
import Providers
import Resilience

/// What one attempt at one target takes before its request goes out — a half-open probe slot of the target's
/// breaker, a key of its provider with the tokens reserved against that key's TPM limit, a hold on the agent's and
/// tenant's budgets — and gives back in exactly one place: `giveBack` when the request never went out or was
/// stopped, `settle` when it ended.
///
/// A call waiting for a key of a busy provider holds a `AttemptHolds` with only its key (its place in the key's
/// queue); the attempt it wakes to starts from it.
struct AttemptHolds {
    let target: ResolvedTarget
    private(set) var probe = false
    private(set) var key: Int?
    /// Reserved against the key's TPM limit, settled against what the provider reports.
    private(set) var tokens = 0
    private(set) var budget: Reservation?

    init(target: ResolvedTarget) {
        self.target = target
    }

    /// A place in the queue for a key of `target`'s provider, reserved by `ResilienceRegistry.reserveKey`.
    static func place(_ target: ResolvedTarget, key: Int, tokens: Int) -> AttemptHolds {
        var holds = AttemptHolds(target: target)
        holds.key = key
        holds.tokens = tokens
        return holds
    }

    mutating func holdProbe() { probe = true }

    mutating func hold(key: Int, tokens: Int) {
        self.key = key
        self.tokens = tokens
    }

    mutating func hold(budget: Reservation) { self.budget = budget }

    /// The budget hold was refused after all (by the cluster store), and the registry gave it back.
    mutating func dropBudget() { budget = nil }

    /// Nothing of this attempt reached the provider (skipped, stopped, cancelled, or not even made): every hold
    /// goes back unused.
    consuming func giveBack(to shared: DaemonContext) {
        if probe { shared.resilience.releaseProbe(target) }
        if let key {
            shared.resilience.settleKey(target.provider, index: key, reserved: tokens, actual: 0, info: RateLimitInfo(),
                                        rateLimited: false)
        }
        if let budget { shared.governance?.settleBudget(budget, promptTokens: nil, completionTokens: nil) }
    }

    /// The attempt's request ended with `result`: the breaker hears of it (which frees a probe slot), the key is
    /// settled with the tokens the provider reported and its rate-limit headers, the budget with the usage.
    /// A local configuration failure never reached the provider: it is given back as unsent instead, and nothing
    /// counts it. Returns whether the breaker counted the attempt.
    consuming func settle(_ result: AttemptResult, _ classification: Classification?, endsCall: Bool,
                          firstOnTarget: Bool, shared: DaemonContext) -> Bool {
        if classification?.kind == .configuration {
            shared.resilience.forgetFirstAttempt(target.provider, firstOnTarget)
            giveBack(to: shared)
            return false
        }
        let counted = shared.resilience.record(target, failed: classification?.kind.countsAgainstBreaker ?? false,
                                               duration: result.duration, isProbe: probe, endsCall: endsCall)
        if let key {
            shared.resilience.settleKey(target.provider, index: key, reserved: tokens,
                                        actual: result.usage?.totalTokens, info: result.rateLimit,
                                        rateLimited: classification?.kind == .rateLimited)
        }
        if let budget {
            shared.governance?.settleBudget(budget, promptTokens: result.usage?.promptTokens,
                                            completionTokens: result.usage?.completionTokens)
        }
        return counted
    }
}

/// One attempt whose request is made: its holds, the upstream call turning libcurl's callbacks into frames, and
/// the engine's transfer once the request went out (nil while STARTED is still being written to the app).
///
/// A class, though the driver's phase owns it alone: the phase is read on every streamed chunk, and moving one
/// reference in and out of the enum costs one retain where copying the holds (target, model, budget hold) costs
/// several. (The difference is below this machine's run-to-run noise in `breakwater-bench --stream`.)
final class Attempt {
    let holds: AttemptHolds
    let number: Int
    let call: UpstreamCall
    /// Set once, on the event loop, when the request goes out.
    var transfer: TransferID?

    init(holds: AttemptHolds, number: Int, call: UpstreamCall) {
        self.holds = holds
        self.number = number
        self.call = call
    }

    var target: ResolvedTarget { holds.target }
}

/// How a call ended, as stats and the audit trail record it; decided by the driver, never re-read from the frames
/// the app was sent.
enum CallOutcome {
    /// The provider's answer reached the app whole.
    case answered(Providers.Usage?)
    /// The call ended with an error (an ERROR frame, or error TRAILERS after a stream began).
    case failed(ErrorCode)
    /// CANCEL, or the connection went away.
    case cancelled
    /// Handed back at a graceful stop before it started (NOT_ACCEPTED): the shim sends it to the next daemon.
    case handedBack

    /// Counted in the daemon's failed calls (STATUS=, `breakwater status`).
    var countsAsFailed: Bool {
        switch self {
        case .answered, .cancelled: false
        case .failed, .handedBack: true
        }
    }
}
