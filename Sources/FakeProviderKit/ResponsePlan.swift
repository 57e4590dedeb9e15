/// One thing the connection handler does while answering a chat request.
enum ResponseAction {
    /// Pause; the handler schedules the rest on the event loop.
    case wait(milliseconds: Int)
    /// The status line and headers; `openai-processing-ms` is added when it is written.
    case head(status: Int, headers: [(String, String)])
    case body(String)
    /// Close the connection with a TCP reset, leaving the response unfinished.
    case reset
    /// The end of the response (for streams, the terminating chunk).
    case end
}

/// The whole answer to one chat request, worked out before the first byte is written, so the handler only
/// walks a list. Pure: everything it needs is passed in.
struct ResponsePlan {
    var actions: [ResponseAction]
    /// Streams flush after every event; plain answers flush once at the end.
    var flushEachBody: Bool

    /// Identity and limits shared by every answer to one request.
    struct Envelope {
        var completionID: String
        var requestID: String
        var created: Int
        var limits: RateLimitSnapshot
    }

    /// An answer that is an error from the start (bad key, bad body): no faults apply.
    static func error(_ error: OpenAIError, envelope: Envelope, step: FaultStep = FaultStep()) -> ResponsePlan {
        var actions: [ResponseAction] = []
        appendWhole(error: error, envelope: envelope, step: step, to: &actions)
        return ResponsePlan(actions: actions, flushEachBody: false)
    }

    /// The answer to an accepted request, shaped by `step`.
    static func answer(step: FaultStep, request: ChatRequest, envelope: Envelope) -> ResponsePlan {
        let status = step.status.map { (200...599).contains($0) ? $0 : 500 } ?? 200
        guard status == 200 else {
            let error = OpenAIError.scripted(
                status: status,
                code: step.errorCode,
                context: OpenAIError.Context(
                    model: request.model,
                    promptTokens: request.promptTokens,
                    rateLimitRequests: envelope.limits.limitRequests,
                    retryAfterMs: Self.retryAfterMs(step)
                )
            )
            return Self.error(error, envelope: envelope, step: step)
        }
        let content = step.content ?? "Echo: " + request.lastUserText
        let usage = Usage(promptTokens: request.promptTokens, completionTokens: ChatRequest.wordCount(content))
        if request.stream {
            return stream(step: step, request: request, content: content, usage: usage, envelope: envelope)
        }
        var actions: [ResponseAction] = []
        let body = OpenAIWire.completion(
            id: envelope.completionID, created: envelope.created, model: request.model, content: content,
            usage: usage
        )
        appendWhole(
            status: 200, contentType: "application/json", body: body, envelope: envelope, step: step, to: &actions
        )
        return ResponsePlan(actions: actions, flushEachBody: false)
    }

    // MARK: Whole bodies

    private static func appendWhole(
        error: OpenAIError, envelope: Envelope, step: FaultStep, to actions: inout [ResponseAction]
    ) {
        var envelope = envelope
        if error.code == "rate_limit_exceeded" {
            envelope.limits.remainingRequests = 0
            envelope.limits.resetRequestsMs = retryAfterMs(step) ?? 1000
        }
        let (contentType, text) = error.body
        appendWhole(
            status: error.status, contentType: contentType, body: text, envelope: envelope, step: step, to: &actions
        )
    }

    /// A body sent with `content-length`, possibly delayed, truncated (`malformed_json`) or cut by a reset.
    private static func appendWhole(
        status: Int, contentType: String, body: String, envelope: Envelope, step: FaultStep,
        to actions: inout [ResponseAction]
    ) {
        if let delay = step.delayFirstByteMs, delay > 0 {
            actions.append(.wait(milliseconds: delay))
        }
        if let reset = step.resetAfterChunks, reset <= 0 {
            actions.append(.reset)
            return
        }
        var body = body
        if step.malformedJSON == true, status == 200 {
            body = truncated(body)
        }
        var headers = headers(contentType: contentType, envelope: envelope, step: step)
        headers.append(("content-length", String(body.utf8.count)))
        actions.append(.head(status: status, headers: headers))
        if step.resetAfterChunks != nil {
            actions.append(.body(truncated(body)))
            actions.append(.reset)
            return
        }
        actions.append(.body(body))
        actions.append(.end)
    }

    // MARK: Streams

    private static func stream(
        step: FaultStep, request: ChatRequest, content: String, usage: Usage, envelope: Envelope
    ) -> ResponsePlan {
        let writer = OpenAIWire.ChunkWriter(
            id: envelope.completionID, created: envelope.created, model: request.model,
            includeUsage: request.includeUsage, includeObfuscation: request.includeObfuscation
        )
        let pieces = Self.pieces(of: content, count: step.chunks)
        let interval = max(0, step.chunkIntervalMs ?? 0)
        var malformedPending = step.malformedJSON == true
        var actions: [ResponseAction] = []

        func send(_ payload: String) {
            var payload = payload
            if malformedPending {
                malformedPending = false
                payload = truncated(payload)
            }
            actions.append(.body(OpenAIWire.event(payload)))
        }

        // After `sent` content chunks: stall, reset or error event if the step asks for it at that point.
        // Returns false when the stream ends there.
        func faults(afterSent sent: Int) -> Bool {
            let last = sent == pieces.count
            func hits(_ k: Int?) -> Bool {
                guard let k else { return false }
                return k == sent || (last && k > sent)
            }
            if hits(step.stallAfterChunks), let stall = step.stallMs, stall > 0 {
                actions.append(.wait(milliseconds: stall))
            }
            if hits(step.resetAfterChunks) {
                actions.append(.reset)
                return false
            }
            if hits(step.errorAfterChunks) {
                let error = OpenAIError.scripted(
                    status: 500,
                    code: step.errorCode,
                    context: OpenAIError.Context(
                        model: request.model, promptTokens: request.promptTokens,
                        rateLimitRequests: envelope.limits.limitRequests, retryAfterMs: nil
                    )
                )
                actions.append(.body(OpenAIWire.event(error.compactJSON)))
                actions.append(.end)
                return false
            }
            return true
        }

        if let delay = step.delayFirstByteMs, delay > 0 {
            actions.append(.wait(milliseconds: delay))
        }
        actions.append(
            .head(status: 200, headers: headers(contentType: "text/event-stream; charset=utf-8", envelope: envelope,
                                                step: step))
        )
        actions.append(.body(OpenAIWire.event(writer.role)))
        for (index, piece) in pieces.enumerated() {
            guard faults(afterSent: index) else { return ResponsePlan(actions: actions, flushEachBody: true) }
            if interval > 0 {
                actions.append(.wait(milliseconds: interval))
            }
            send(writer.content(piece))
        }
        guard faults(afterSent: pieces.count) else { return ResponsePlan(actions: actions, flushEachBody: true) }
        if interval > 0 {
            actions.append(.wait(milliseconds: interval))
        }
        send(writer.finish)
        if request.includeUsage {
            actions.append(.body(OpenAIWire.event(writer.usage(usage))))
        }
        actions.append(.body(OpenAIWire.done))
        actions.append(.end)
        return ResponsePlan(actions: actions, flushEachBody: true)
    }

    /// The content cut into pieces that concatenate back to it exactly: by default one per word (each word
    /// carrying the whitespace before it, as OpenAI's tokens do), or `count` pieces of near-equal length.
    static func pieces(of content: String, count: Int?) -> [String] {
        guard !content.isEmpty else { return [] }
        if let count, count > 0 {
            let characters = Array(content)
            let n = min(count, characters.count)
            var pieces: [String] = []
            pieces.reserveCapacity(n)
            var start = 0
            for index in 0..<n {
                let end = (index + 1) * characters.count / n
                pieces.append(String(characters[start..<end]))
                start = end
            }
            return pieces
        }
        var pieces: [String] = []
        var current = ""
        var previousWasSpace = false
        for character in content {
            let isSpace = character.isWhitespace
            if isSpace, !previousWasSpace, !current.isEmpty {
                pieces.append(current)
                current = ""
            }
            current.append(character)
            previousWasSpace = isSpace
        }
        if !current.isEmpty {
            pieces.append(current)
        }
        return pieces
    }

    /// The wait the step announces: `retry-after-ms`, else `Retry-After` when it is in seconds.
    private static func retryAfterMs(_ step: FaultStep) -> Int? {
        step.retryAfterMs ?? step.retryAfter.flatMap { Int($0) }.map { $0 * 1000 }
    }

    /// The first half of `text`: valid HTTP framing around JSON that does not parse.
    private static func truncated(_ text: String) -> String {
        String(decoding: text.utf8.prefix(text.utf8.count / 2), as: UTF8.self)
    }

    // MARK: Headers

    private static func headers(contentType: String, envelope: Envelope, step: FaultStep) -> [(String, String)] {
        let limits = envelope.limits
        var headers: [(String, String)] = [
            ("content-type", contentType),
            ("x-request-id", envelope.requestID),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", String(limits.limitRequests)),
            ("x-ratelimit-limit-tokens", String(limits.limitTokens)),
            ("x-ratelimit-remaining-requests", String(limits.remainingRequests)),
            ("x-ratelimit-remaining-tokens", String(limits.remainingTokens)),
            ("x-ratelimit-reset-requests", OpenAIWire.duration(milliseconds: limits.resetRequestsMs)),
            ("x-ratelimit-reset-tokens", OpenAIWire.duration(milliseconds: limits.resetTokensMs)),
        ]
        if let retryAfter = step.retryAfter {
            headers.append(("retry-after", retryAfter))
        }
        if let retryAfterMs = step.retryAfterMs {
            headers.append(("retry-after-ms", String(retryAfterMs)))
        }
        return headers
    }
}
