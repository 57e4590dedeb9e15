import BreakwaterWire
import Foundation
import NIOHTTP1

/// How the HTTP front tells an app a call failed: the HTTP status each protocol error code maps to, and OpenAI's
/// error JSON, so each SDK raises its usual exception (`RateLimitError` for 429, `NotFoundError` for 404, ...).
/// The table is the README's "Errors over HTTP".
enum HTTPErrors {
    struct Mapping {
        var status: HTTPResponseStatus
        /// OpenAI's `error.type`.
        var type: String
    }

    static func mapping(for error: ErrorMessage) -> Mapping {
        switch error.code {
        case .badRequest, .bodyTooLarge, .protocolError:
            return Mapping(status: .badRequest, type: "invalid_request_error")
        case .unknownRoute:
            return Mapping(status: .notFound, type: "invalid_request_error")
        case .unauthenticated:
            return Mapping(status: .unauthorized, type: "authentication_error")
        case .forbidden, .stepUpRequired, .approvalDenied, .toolCallBlocked:
            return Mapping(status: .forbidden, type: "permission_error")
        case .approvalExpired:
            return Mapping(status: .requestTimeout, type: "approval_expired")
        case .rateLimited, .concurrencyLimit, .tooManyCalls:
            return Mapping(status: .tooManyRequests, type: "rate_limit_error")
        case .budgetExceeded:
            return Mapping(status: .tooManyRequests, type: "insufficient_quota")
        case .upstreamError:
            // The provider's own status (400, 404, 422, 500, 503, ...), as the Python transport gives it — except
            // 401, 403 and 407, which are about the daemon's provider key, not the app's token: 502.
            if let s = error.upstreamStatus, s >= 400, s < 600, ![401, 403, 407].contains(s) {
                return Mapping(status: HTTPResponseStatus(statusCode: Int(s)), type: "upstream_error")
            }
            return Mapping(status: .badGateway, type: "upstream_error")
        case .upstreamMalformed, .streamInterrupted, .eventTooLarge:
            return Mapping(status: .badGateway, type: "api_error")
        case .upstreamUnavailable, .notAccepted, .shuttingDown, .tooManyConnections:
            return Mapping(status: .serviceUnavailable, type: "api_error")
        case .timeout:
            return Mapping(status: .gatewayTimeout, type: "timeout_error")
        default:
            // NO_CREDENTIAL, CONFIGURATION_ERROR, INTERNAL_ERROR: the daemon's setup, not the app's request.
            return Mapping(status: .internalServerError, type: "api_error")
        }
    }

    /// `{"error": {"message", "type", "param", "code", ...}}`: OpenAI's shape, with the protocol's code name in
    /// `code` (`RATE_LIMITED`, as the Python client names it) and, for a failed walk, every attempt. Messages name what failed,
    /// never a prompt, completion or key.
    static func body(for error: ErrorMessage) -> [String: Any] {
        var object: [String: Any] = [
            "message": error.message, "type": mapping(for: error).type, "param": NSNull(),
            "code": error.code.name,
        ]
        if let p = error.provider { object["provider"] = p }
        if let s = error.upstreamStatus { object["upstream_status"] = Int(s) }
        if let ms = error.retryAfterMs { object["retry_after_ms"] = Int(ms) }
        if !error.attempts.isEmpty {
            object["attempts"] = error.attempts.map { a -> [String: Any] in
                var o: [String: Any] = ["provider": a.provider, "model": a.model, "outcome": a.outcome]
                if let f = a.failure { o["failure"] = f }
                if let s = a.upstreamStatus { o["upstream_status"] = Int(s) }
                if let w = a.waitMs { o["wait_ms"] = Int(w) }
                if let t = a.then { o["then"] = t }
                if a.retryBudgetRefused { o["retry_budget_refused"] = true }
                if let m = a.message { o["message"] = m }
                return o
            }
        }
        return ["error": object]
    }

    /// Response headers for an error: `Retry-After` (whole seconds, rounded up) when the daemon knows the wait,
    /// and `x-should-retry`, which the OpenAI SDKs obey: the daemon already retried and fell back as its route
    /// says, so the SDK should not multiply that — except after a restart hand-back (the call never started) and
    /// for rate limits, where the SDK waits the `Retry-After` the daemon gives.
    static func headers(for error: ErrorMessage) -> [(String, String)] {
        var headers: [(String, String)] = []
        if let ms = error.retryAfterMs {
            headers.append(("retry-after", String((Int(ms) + 999) / 1000)))
            headers.append(("retry-after-ms", String(ms)))
        }
        switch error.code {
        case .notAccepted, .tooManyConnections, .rateLimited, .concurrencyLimit, .tooManyCalls:
            headers.append(("x-should-retry", "true"))
        default:
            headers.append(("x-should-retry", "false"))
        }
        return headers
    }

    static func json(_ object: Any) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
            ?? Data(#"{"error":{"message":"internal error","type":"api_error"}}"#.utf8)
        return [UInt8](data)
    }
}
