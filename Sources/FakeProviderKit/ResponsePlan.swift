/// One thing the connection handler does while answering a chat request.
enum ResponseAction {
    /// Pause; the handler schedules the rest on the event loop.
    case wait(milliseconds: Int)
    /// The status line and headers; the timing header is added when it is written.
    case head(status: Int, headers: [(String, String)], timing: TimingHeader)
    case body(String)
    /// Close the connection with a TCP reset, leaving the response unfinished.
    case reset
    /// The end of the response (for streams, the terminating chunk).
    case end
}

/// The whole answer to one chat request, worked out before the first byte is written, so the handler only
/// walks a list. Pure: everything it needs is passed in, and the provider's dialect says what each part looks
/// like; the faults are placed the same way for every provider.
struct ResponsePlan {
    var actions: [ResponseAction]
    /// Streams flush after every event; plain answers flush once at the end.
    var flushEachBody: Bool
    /// The usage the answer reports (nil for an error), which the provider would bill.
    var usage: Usage? = nil

    /// Identity, time and limits shared by every answer to one request.
    struct Envelope {
        /// Per-server request number, the source of every id.
        var sequence: UInt64
        /// 16 random alphanumerics per server, so ids from two fakes never collide.
        var idPrefix: String
        /// 16 random hex digits per server.
        var hexPrefix: String
        /// When the request arrived, in seconds since 1970.
        var created: Int
        var limits: RateLimitSnapshot

        /// `chatcmpl-` and 29 alphanumerics, like OpenAI's completion ids.
        var completionID: String { OpenAIWire.completionID(prefix: idPrefix, sequence: sequence) }
        /// `req_` and 32 hex digits, like OpenAI's `x-request-id`.
        var requestID: String { OpenAIWire.requestID(prefix: hexPrefix, sequence: sequence) }
    }

    /// An answer that is an error from the start (bad key, bad body): only the timing and breakage faults of
    /// `step` apply. A rate-limit error shows an empty request bucket in its headers, unless they are a real
    /// token bucket's.
    static func error(
        _ error: WireError, envelope: Envelope, step: FaultStep = FaultStep(), dialect: some ProviderDialect
    ) -> ResponsePlan {
        var envelope = envelope
        if error.rateLimited, !envelope.limits.enforced {
            envelope.limits.remainingRequests = 0
            envelope.limits.resetRequestsMs = retryAfterMs(step) ?? 1000
        }
        var actions: [ResponseAction] = []
        appendWhole(
            status: error.status, contentType: error.contentType, body: error.body, envelope: envelope, step: step,
            dialect: dialect, to: &actions
        )
        return ResponsePlan(actions: actions, flushEachBody: false)
    }

    /// The 429 for a request the key's token bucket refused, sent at once (a provider refuses before doing any
    /// work): the API's rate-limit error quoting the bucket that ran short, `Retry-After` (whole seconds, rounded
    /// up, at least 1) and `retry-after-ms` (the wait until one request and its tokens fit, rounded up to a
    /// millisecond), and the bucket's rate-limit headers in `envelope`. A request with more tokens than the
    /// bucket holds gets no wait: waiting would not help.
    static func rateLimited(
        _ refusal: TokenBucket.Refusal, request: ChatRequest, envelope: Envelope, dialect: some ProviderDialect
    ) -> ResponsePlan {
        let limits = envelope.limits
        let tokens = refusal.quantity == .tokens
        let limit = tokens ? limits.limitTokens : limits.limitRequests
        let remaining = tokens ? limits.remainingTokens : limits.remainingRequests
        let waitMs = refusal.wait?.millisecondsRoundedUp
        var context = context(request: request, envelope: envelope, wait: waitMs)
        context.exceeded = ExceededLimit(
            quantity: refusal.quantity, limit: limit, used: max(0, limit - remaining),
            requested: tokens ? request.tokenCost : 1, fits: refusal.wait != nil
        )
        let error = dialect.error(status: 429, code: nil, context: context)
        let step = FaultStep(retryAfter: waitMs.map { String(max(1, ($0 + 999) / 1000)) }, retryAfterMs: waitMs)
        return Self.error(error, envelope: envelope, step: step, dialect: dialect)
    }

    /// The answer to an accepted request, shaped by `step`.
    static func answer(
        step: FaultStep, request: ChatRequest, envelope: Envelope, dialect: some ProviderDialect
    ) -> ResponsePlan {
        let status = step.status.map { (200...599).contains($0) ? $0 : 500 } ?? 200
        guard status == 200 else {
            let error = dialect.error(
                status: status, code: step.errorCode,
                context: context(request: request, envelope: envelope, wait: retryAfterMs(step))
            )
            return Self.error(error, envelope: envelope, step: step, dialect: dialect)
        }
        let content = step.content ?? "Echo: " + request.lastUserText
        let usage = Usage(promptTokens: request.promptTokens, completionTokens: ChatRequest.wordCount(content))
        if let tool = step.toolCall {
            if request.stream, let events = dialect.toolCallEvents(tool: tool, usage: usage, request: request,
                                                                  envelope: envelope) {
                let writer = dialect.writer(usage: usage, request: request, envelope: envelope)
                var actions: [ResponseAction] = []
                if let delay = step.delayFirstByteMs, delay > 0 { actions.append(.wait(milliseconds: delay)) }
                actions.append(.head(status: 200, headers: dialect.headers(contentType: writer.contentType,
                                                                           envelope: envelope, step: step),
                                     timing: dialect.timing))
                for (i, event) in (writer.opening + events).enumerated() {
                    actions.append(.body(writer.framing.frame(event, first: i == 0)))
                }
                let trailer = writer.framing.trailer(empty: false)
                if !trailer.isEmpty { actions.append(.body(trailer)) }
                actions.append(.end)
                return ResponsePlan(actions: actions, flushEachBody: true, usage: usage)
            }
            if !request.stream, let (contentType, body) = dialect.toolCallCompletion(
                tool: tool, usage: usage, request: request, envelope: envelope) {
                var actions: [ResponseAction] = []
                appendWhole(status: 200, contentType: contentType, body: body, envelope: envelope, step: step,
                            dialect: dialect, to: &actions)
                return ResponsePlan(actions: actions, flushEachBody: false, usage: usage)
            }
        }
        if request.stream {
            var plan = stream(
                step: step, request: request, content: content, envelope: envelope,
                writer: dialect.writer(usage: usage, request: request, envelope: envelope), dialect: dialect
            )
            plan.usage = usage
            return plan
        }
        let (contentType, body) = dialect.completion(
            content: content, usage: usage, request: request, envelope: envelope
        )
        var actions: [ResponseAction] = []
        appendWhole(
            status: 200, contentType: contentType, body: body, envelope: envelope, step: step, dialect: dialect,
            to: &actions
        )
        return ResponsePlan(actions: actions, flushEachBody: false, usage: usage)
    }

    private static func context(request: ChatRequest, envelope: Envelope, wait: Int?) -> ErrorContext {
        ErrorContext(
            model: request.model, promptTokens: request.promptTokens,
            rateLimitRequests: envelope.limits.limitRequests, retryAfterMs: wait
        )
    }

    // MARK: Whole bodies

    /// A body sent with `content-length`, possibly delayed, truncated (`malformed_json`) or cut by a reset.
    private static func appendWhole(
        status: Int, contentType: String, body: String, envelope: Envelope, step: FaultStep,
        dialect: some ProviderDialect, to actions: inout [ResponseAction]
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
        var headers = dialect.headers(contentType: contentType, envelope: envelope, step: step)
        headers.append(("content-length", String(body.utf8.count)))
        actions.append(.head(status: status, headers: headers, timing: dialect.timing))
        if step.resetAfterChunks != nil {
            actions.append(.body(truncated(body)))
            actions.append(.reset)
            return
        }
        actions.append(.body(body))
        actions.append(.end)
    }

    // MARK: Streams

    private static func stream<D: ProviderDialect>(
        step: FaultStep, request: ChatRequest, content: String, envelope: Envelope, writer: D.Writer, dialect: D
    ) -> ResponsePlan {
        var writer = writer
        let framing = writer.framing
        let pieces = Self.pieces(of: content, count: step.chunks)
        let interval = max(0, step.chunkIntervalMs ?? 0)
        var malformedPending = step.malformedJSON == true
        var sentAny = false
        var actions: [ResponseAction] = []

        func emit(_ event: SSEEvent) {
            actions.append(.body(framing.frame(event, first: !sentAny)))
            sentAny = true
        }

        // Content and the first closing event may be the one `malformed_json` cuts short.
        func send(_ event: SSEEvent) {
            var event = event
            if malformedPending {
                malformedPending = false
                event.data = truncated(event.data)
            }
            emit(event)
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
                let error = dialect.streamError(
                    code: step.errorCode, context: context(request: request, envelope: envelope, wait: nil)
                )
                emit(error.event)
                let trailer = framing.trailer(empty: false)
                if !trailer.isEmpty {
                    actions.append(.body(trailer))
                }
                actions.append(.end)
                return false
            }
            return true
        }

        if let delay = step.delayFirstByteMs, delay > 0 {
            actions.append(.wait(milliseconds: delay))
        }
        let headers = dialect.headers(contentType: writer.contentType, envelope: envelope, step: step)
        actions.append(.head(status: 200, headers: headers, timing: dialect.timing))
        writer.opening.forEach(emit)
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
        for (index, event) in writer.closing.enumerated() {
            if index == 0 {
                send(event)
            } else {
                emit(event)
            }
        }
        let trailer = framing.trailer(empty: !sentAny)
        if !trailer.isEmpty {
            actions.append(.body(trailer))
        }
        actions.append(.end)
        return ResponsePlan(actions: actions, flushEachBody: true)
    }

    /// The content cut into pieces that concatenate back to it exactly: by default one per word (each word
    /// carrying the whitespace before it, as OpenAI's tokens do), or `count` pieces of near-equal length.
    static func pieces(of content: String, count: Int?) -> [String] {
        guard !content.isEmpty else { return [] }
        if let count, count > 0 {
            // ASCII without a CR (CR LF is one character) is one character a byte: cut the bytes, without making
            // an array of characters (slow in a debug build, and the long answers are ASCII).
            if UTF8Scan.all(of: content, { $0 < 0x80 && $0 != UInt8(ascii: "\r") }) {
                return UTF8Scan.bytes(of: content) { bytes in
                    let n = min(count, bytes.count)
                    return (0..<n).map { index in
                        let range = (index * bytes.count / n)..<((index + 1) * bytes.count / n)
                        return String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
                    }
                }
            }
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
    static func retryAfterMs(_ step: FaultStep) -> Int? {
        step.retryAfterMs ?? step.retryAfter.flatMap { Int($0) }.map { $0 * 1000 }
    }

    /// The first half of `text`: valid HTTP framing around JSON that does not parse.
    private static func truncated(_ text: String) -> String {
        String(decoding: text.utf8.prefix(text.utf8.count / 2), as: UTF8.self)
    }
}
