import Resilience
import Testing

@Suite struct ClassificationTests {
    let classifier = ErrorClassifier()

    @Test(arguments: [
        (AttemptOutcome.status(429, providerCode: "rate_limit_exceeded"), FailureKind.rateLimited, true),
        (.status(500, providerCode: nil), .transient, true),
        (.status(502, providerCode: nil), .transient, true),
        (.status(503, providerCode: nil), .transient, true),
        (.status(504, providerCode: nil), .transient, true),
        (.status(529, providerCode: "overloaded_error"), .transient, true),
        (.status(400, providerCode: "invalid_request_error"), .badRequest, false),
        (.status(401, providerCode: "invalid_api_key"), .auth, false),
        (.status(403, providerCode: nil), .auth, false),
        (.status(404, providerCode: "model_not_found"), .notFound, false),
        (.status(422, providerCode: nil), .badRequest, false),
        (.status(429, providerCode: "insufficient_quota"), .quotaExhausted, false),
        (.status(501, providerCode: nil), .transient, false),
        (.transport(.connectFailed), .transient, true),
        (.transport(.connectionReset), .transient, true),
        (.transport(.timeout), .transient, true),
        (.streamError(providerCode: "overloaded_error"), .transient, true),
        (.streamError(providerCode: "insufficient_quota"), .quotaExhausted, false),
    ])
    func defaultTable(outcome: AttemptOutcome, kind: FailureKind, retryable: Bool) {
        #expect(classifier.classify(outcome) == Classification(kind: kind, retryable: retryable))
    }

    @Test func successIsNotAFailure() {
        #expect(classifier.classify(.success) == nil)
    }

    @Test func theTableIsConfig() {
        let custom = ErrorClassifier(retryableStatusCodes: [503], nonRetryableErrorCodes: [])
        #expect(custom.classify(.status(429, providerCode: nil)) == Classification(kind: .rateLimited, retryable: false))
        #expect(custom.classify(.status(500, providerCode: nil)) == Classification(kind: .transient, retryable: false))
        #expect(custom.classify(.status(429, providerCode: "insufficient_quota"))
            == Classification(kind: .rateLimited, retryable: false))
        let listed400 = ErrorClassifier(retryableStatusCodes: [400])
        #expect(listed400.classify(.status(400, providerCode: nil)) == Classification(kind: .transient, retryable: true))
    }

    @Test(arguments: FailureKind.allCases)
    func onlyTransientFailuresCountAgainstTheBreaker(kind: FailureKind) {
        #expect(kind.countsAgainstBreaker == (kind == .transient))
    }
}
