import Foundation
import NIOCore
import NIOHTTP1

/// What an error message may mention about the request it answers.
struct ErrorContext: Sendable {
    var model: String
    var promptTokens: Int
    var rateLimitRequests: Int
    /// The wait the scripted step (or the token bucket) announces, when it announces one.
    var retryAfterMs: Int?
    /// The limit the token bucket refused the request on; nil for scripted and rolled errors.
    var exceeded: ExceededLimit? = nil
}

/// The limit a token-bucket refusal quotes, in the numbers the rate-limit headers show.
struct ExceededLimit: Sendable {
    /// Which bucket ran short.
    var quantity: TokenBucket.Quantity
    /// Its rate per minute (`x-ratelimit-limit-*`).
    var limit: Int
    /// The limit less what is left (`x-ratelimit-remaining-*`).
    var used: Int
    /// What the request needed: 1 request, or its token cost.
    var requested: Int
    /// False when the request needs more tokens than the bucket holds, so waiting never helps.
    var fits: Bool
}

/// How one provider's API looks on the wire: which requests it refuses before reading them, how it reads a
/// body, and what its answers, errors, streams and headers look like. A value is made per request (it may
/// carry what the path said) and is pure: no I/O, no shared state.
protocol ProviderDialect {
    associatedtype Writer: StreamWriter

    /// The API key the request presents, wherever this API takes it (header or query parameter); the token
    /// bucket is per key. Never logged or echoed.
    func apiKey(_ headers: HTTPHeaders) -> String?
    /// The error for a request refused before its body counts (no key, wrong key, missing version), or nil.
    func reject(_ headers: HTTPHeaders, requiredKey: String?) -> WireError?
    /// The parts of the body the fake answers from, or the error the provider sends for a bad body.
    func parse(_ body: ByteBufferView) -> Result<ChatRequest, WireError>
    /// The answer to a body larger than the fake reads.
    var bodyTooLarge: WireError { get }
    /// The error for a scripted `status`, refined by a scripted `error_code`.
    func error(status: Int, code: String?, context: ErrorContext) -> WireError
    /// The error sent inside a 200 stream (`error_after_chunks`).
    func streamError(code: String?, context: ErrorContext) -> WireError
    /// A whole successful answer: content type and body.
    func completion(
        content: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope
    ) -> (contentType: String, body: String)
    /// The events of a streamed answer.
    func writer(usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope) -> Writer
    /// A whole answer in which the model calls `tool` (with `{}` arguments); nil where the fake has none for
    /// this dialect.
    func toolCallCompletion(tool: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope)
        -> (contentType: String, body: String)?
    /// The streamed events that call `tool`, between the writer's opening and `[DONE]`; nil likewise.
    func toolCallEvents(tool: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope)
        -> [SSEEvent]?
    /// Every header but the timing one and `content-length`.
    func headers(contentType: String, envelope: ResponsePlan.Envelope, step: FaultStep) -> [(String, String)]
    var timing: TimingHeader { get }
}

/// The events of one streamed answer, in the order they are sent: `opening`, one `content` event per piece
/// of the text, then `closing`. Faults are placed between them by `ResponsePlan`.
protocol StreamWriter {
    var contentType: String { get }
    var framing: StreamFraming { get }
    /// Events before the first piece of text (role chunk, `message_start`, ...).
    var opening: [SSEEvent] { get }
    /// The event carrying one piece of the text; may count what was sent so far.
    mutating func content(_ piece: String) -> SSEEvent
    /// Events after the last piece (finish reason, usage, `[DONE]`, `message_stop`, ...).
    var closing: [SSEEvent] { get }
}

extension ProviderDialect {
    /// `key` when it is present and, if the personality requires one, the required one.
    static func keyProblem(_ key: String?, requiredKey: String?) -> KeyProblem? {
        guard let key, !key.isEmpty else { return .missing }
        if let requiredKey, key != requiredKey { return .wrong }
        return nil
    }
}

/// Why a request's API key is refused.
enum KeyProblem {
    case missing
    case wrong
}

/// Header values shared by the dialects.
enum HeaderValue {
    /// The key of `Authorization: Bearer <key>`, or nil when there is none.
    static func bearerKey(_ header: String?) -> String? {
        guard let header else { return nil }
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return nil }
        let key = trimmed.dropFirst(7).trimmingCharacters(in: .whitespaces)
        return key.isEmpty ? nil : key
    }

    /// The scripted `retry-after` and `retry-after-ms` headers, verbatim.
    static func retryAfter(_ step: FaultStep) -> [(String, String)] {
        var headers: [(String, String)] = []
        if let retryAfter = step.retryAfter {
            headers.append(("retry-after", retryAfter))
        }
        if let retryAfterMs = step.retryAfterMs {
            headers.append(("retry-after-ms", String(retryAfterMs)))
        }
        return headers
    }
}

extension ProviderDialect {
    func toolCallCompletion(tool: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope)
        -> (contentType: String, body: String)? { nil }
    func toolCallEvents(tool: String, usage: Usage, request: ChatRequest, envelope: ResponsePlan.Envelope)
        -> [SSEEvent]? { nil }
}
