import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Serves one HTTP/1.1 connection: chat requests in any provider's format, answered by walking a
/// `ResponsePlan`, and the `/_fake/...` control endpoints. Runs only on its channel's event loop; waits are
/// scheduled, never slept.
final class FakeProviderHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Bodies past this size are dropped and answered with 413.
    static let maxBodyBytes = 32 << 20

    /// One chat answer being written: where in the plan it is and how it is counted.
    private final class Exchange {
        let ticket: ChatTicket
        let plan: ResponsePlan
        let version: HTTPVersion
        let keepAlive: Bool
        let receivedAt: NIODeadline
        var cursor = 0
        var pending: Scheduled<Void>?
        var finished = false
        /// Waiting for the client to take more bytes (the channel is not writable) before the next body part.
        var waitingForRoom = false

        init(ticket: ChatTicket, plan: ResponsePlan, version: HTTPVersion, keepAlive: Bool, receivedAt: NIODeadline) {
            self.ticket = ticket
            self.plan = plan
            self.version = version
            self.keepAlive = keepAlive
            self.receivedAt = receivedAt
        }
    }

    private let state: ProviderState
    private var requestHead: HTTPRequestHead?
    private var body = ByteBuffer()
    private var bodyTooLarge = false
    private var exchange: Exchange?

    init(state: ProviderState) {
        self.state = state
    }

    // MARK: Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestHead = head
            body.clear()
            bodyTooLarge = false
            // libcurl sends `Expect: 100-continue` with larger bodies and waits a second for this before
            // sending them; real servers answer at once.
            if head.version.major == 1, head.version.minor >= 1,
                head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" })
            {
                let interim = HTTPResponseHead(version: head.version, status: .continue)
                context.writeAndFlush(wrapOutboundOut(.head(interim)), promise: nil)
            }
        case .body(var chunk):
            if bodyTooLarge || body.readableBytes + chunk.readableBytes > Self.maxBodyBytes {
                bodyTooLarge = true
                body.clear()
            } else {
                body.writeBuffer(&chunk)
            }
        case .end:
            guard let head = requestHead else { return }
            requestHead = nil
            route(head, context: context)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let exchange, exchange.waitingForRoom, !exchange.finished {
            exchange.waitingForRoom = false
            run(exchange, context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let exchange {
            finish(exchange, .aborted)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Routing

    private func route(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? head.uri
        if let chat = Route.chat(method: head.method, path: path, query: parts.count > 1 ? parts[1] : nil) {
            answerChat(head, route: chat, context: context)
            return
        }
        switch (head.method, path) {
        case (.POST, "/_fake/script"):
            appendScript(head, context: context)
        case (.DELETE, "/_fake/script"):
            state.clearScript()
            respondJSON(head, status: 200, body: "{\"queued\":0}", context: context)
        case (.GET, "/_fake/script"):
            respondJSON(head, status: 200, body: Self.encode(state.scriptSnapshot()), context: context)
        case (.GET, "/_fake/stats"):
            respondJSON(head, status: 200, body: Self.encode(state.stats()), context: context)
        case (.POST, "/_fake/reset"):
            state.resetAll()
            respondJSON(head, status: 200, body: Self.encode(state.stats()), context: context)
        case (.POST, "/_fake/reset-stats"):
            // Counters only: the script, the fault generator and the rate limits carry on.
            state.resetStats()
            respondJSON(head, status: 200, body: Self.encode(state.stats()), context: context)
        case (.POST, "/_fake/personality"):
            replacePersonality(head, context: context)
        default:
            let error = Route.notFound(method: head.method, path: path)
            respondJSON(head, status: error.status, body: error.body, context: context)
        }
    }

    // MARK: Chat requests

    private func answerChat(_ head: HTTPRequestHead, route: Route, context: ChannelHandlerContext) {
        let receivedAt = NIODeadline.now()
        let (ticket, admission, limits) = state.beginChat(api: route.api)
        let envelope = ResponsePlan.Envelope(
            sequence: ticket.sequence, idPrefix: state.idPrefix, hexPrefix: state.hexPrefix,
            created: Int(Date().timeIntervalSince1970), limits: limits
        )
        let plan: ResponsePlan
        switch route.api {
        case .openai:
            let dialect = OpenAIDialect()
            plan = self.plan(head, dialect, route: route, ticket: ticket, admission: admission, envelope: envelope)
        case .anthropic:
            let dialect = AnthropicDialect(envelope: envelope)
            plan = self.plan(head, dialect, route: route, ticket: ticket, admission: admission, envelope: envelope)
        case .gemini:
            let dialect = GeminiDialect(route: route, envelope: envelope)
            plan = self.plan(head, dialect, route: route, ticket: ticket, admission: admission, envelope: envelope)
        case .azure:
            let dialect = AzureDialect(route: route, envelope: envelope)
            plan = self.plan(head, dialect, route: route, ticket: ticket, admission: admission, envelope: envelope)
        }
        body.clear()
        let exchange = Exchange(
            ticket: ticket, plan: plan, version: head.version, keepAlive: head.isKeepAlive, receivedAt: receivedAt
        )
        self.exchange = exchange
        run(exchange, context: context)
    }

    /// The answer to one chat request in `dialect`'s shape. In order: a down provider answers 503; then the
    /// dialect's refusals (key, version); then a body too large or unreadable; then the key's token bucket (429
    /// when it refuses); then the script or personality. The body is read first all the same, so the model asked
    /// for is counted whatever the answer.
    private func plan(
        _ head: HTTPRequestHead, _ dialect: some ProviderDialect, route: Route, ticket: ChatTicket,
        admission: Admission, envelope: ResponsePlan.Envelope
    ) -> ResponsePlan {
        let parsed: Result<ChatRequest, WireError>? = bodyTooLarge ? nil : dialect.parse(body.readableBytesView)
        let request = try? parsed?.get()
        let model = request?.model ?? route.pathModel
        if let downStep = admission.downStep {
            if let model {
                state.recordModel(model, for: ticket)
            }
            let stand = request ?? ChatRequest(model: model ?? "", stream: false, lastUserText: "", promptTokens: 0)
            return .answer(step: downStep, request: stand, envelope: envelope, dialect: dialect)
        }
        var refusal = dialect.reject(head.headers, requiredKey: admission.requiredKey)
        if refusal == nil, bodyTooLarge {
            refusal = dialect.bodyTooLarge
        }
        if refusal == nil, case .failure(let error) = parsed {
            refusal = error
        }
        guard let request, refusal == nil else {
            if let model {
                state.recordModel(model, for: ticket)
            }
            return .error(refusal ?? dialect.bodyTooLarge, envelope: envelope, dialect: dialect)
        }
        let verdict = state.decide(
            tokens: request.tokenCost, model: request.model, apiKey: dialect.apiKey(head.headers) ?? "",
            tools: request.tools, for: ticket
        )
        var charged = envelope
        switch verdict {
        case .answer(let step, let limits):
            charged.limits = limits
            let plan = ResponsePlan.answer(step: step, request: request, envelope: charged, dialect: dialect)
            if let usage = plan.usage { state.recordUsage(usage, for: ticket) }
            return plan
        case .rateLimited(let refusal, let limits):
            charged.limits = limits
            return .rateLimited(refusal, request: request, envelope: charged, dialect: dialect)
        }
    }

    /// Walks the plan from its cursor until it has to wait, reset or end.
    private func run(_ exchange: Exchange, context: ChannelHandlerContext) {
        exchange.pending = nil
        let actions = exchange.plan.actions
        while !exchange.finished, exchange.cursor < actions.count {
            // Like a real server, generate no more of the answer than TCP takes: a client that stops reading
            // holds the answer back here (and `completed` stays unset) instead of it piling up in our buffers.
            if case .body = actions[exchange.cursor], !context.channel.isWritable {
                context.flush()
                exchange.waitingForRoom = true
                return
            }
            let action = actions[exchange.cursor]
            exchange.cursor += 1
            switch action {
            case .wait(let milliseconds):
                context.flush()
                exchange.pending = context.eventLoop.assumeIsolated().scheduleTask(
                    in: .milliseconds(Int64(milliseconds))
                ) {
                    self.run(exchange, context: context)
                }
                return
            case .head(let status, let headers, let timing):
                var httpHeaders = HTTPHeaders(headers)
                let elapsed = (NIODeadline.now() - exchange.receivedAt).nanoseconds / 1_000_000
                let (name, value) = timing.header(milliseconds: elapsed)
                httpHeaders.add(name: name, value: value)
                if !exchange.keepAlive {
                    httpHeaders.add(name: "connection", value: "close")
                } else if exchange.version.major == 1, exchange.version.minor == 0 {
                    httpHeaders.add(name: "connection", value: "keep-alive")
                }
                let head = HTTPResponseHead(
                    version: exchange.version, status: HTTPResponseStatus(statusCode: status), headers: httpHeaders
                )
                state.recordStatus(status, for: exchange.ticket)
                context.write(wrapOutboundOut(.head(head)), promise: nil)
            case .body(let text):
                let part = wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text))))
                if exchange.plan.flushEachBody {
                    context.writeAndFlush(part, promise: nil)
                } else {
                    context.write(part, promise: nil)
                }
            case .reset:
                finish(exchange, .reset)
                context.flush()
                Self.resetConnection(context)
                return
            case .end:
                let written = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
                written.futureResult.assumeIsolated().whenComplete { result in
                    switch result {
                    case .success:
                        self.finish(exchange, .completed)
                        if !exchange.keepAlive {
                            context.close(promise: nil)
                        }
                    case .failure:
                        self.finish(exchange, .aborted)
                    }
                }
                return
            }
        }
    }

    /// Counts the exchange's outcome once, whichever of "written", "closed" or "reset" comes first.
    private func finish(_ exchange: Exchange, _ outcome: ChatOutcome) {
        guard !exchange.finished else { return }
        exchange.finished = true
        exchange.pending?.cancel()
        exchange.pending = nil
        state.finish(exchange.ticket, outcome)
        if self.exchange === exchange {
            self.exchange = nil
        }
    }

    /// Closes with SO_LINGER 0, so the peer sees a TCP RST ("connection reset by peer"), not a clean FIN.
    private static func resetConnection(_ context: ChannelHandlerContext) {
        guard let provider = context.channel as? any SocketOptionProvider else {
            context.close(promise: nil)
            return
        }
        provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    // MARK: Control endpoints

    private func appendScript(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let data = Data(body.readableBytesView)
        body.clear()
        let decoder = JSONDecoder()
        let steps: [FaultStep]
        do {
            if data.first(where: { !($0 == 0x20 || (0x09...0x0D).contains($0)) }) == UInt8(ascii: "{") {
                steps = [try decoder.decode(FaultStep.self, from: data)]
            } else {
                steps = try decoder.decode([FaultStep].self, from: data)
            }
        } catch {
            let message = "The script must be a JSON array of fault steps: \(error)"
            let body = OpenAIError(status: 400, message: message, type: "invalid_request_error").body.text
            respondJSON(head, status: 400, body: body, context: context)
            return
        }
        let queued = state.appendScript(steps)
        respondJSON(head, status: 200, body: "{\"queued\":\(queued)}", context: context)
    }

    /// `POST /_fake/personality`: answer with this personality from now on (e.g. `{"down": true}` to take the
    /// provider down, `{}` to bring it back healthy).
    private func replacePersonality(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let data = Data(body.readableBytesView)
        body.clear()
        do {
            let personality = try Personality(jsonData: data)
            state.setPersonality(personality)
            let reply = "{\"name\":\(JSONText.quoted(personality.name)),\"down\":\(personality.down)}"
            respondJSON(head, status: 200, body: reply, context: context)
        } catch {
            let message = "The personality must be a JSON object: \(error)"
            let body = OpenAIError(status: 400, message: message, type: "invalid_request_error").body.text
            respondJSON(head, status: 400, body: body, context: context)
        }
    }

    private func respondJSON(_ head: HTTPRequestHead, status: Int, body text: String, context: ChannelHandlerContext) {
        body.clear()
        let keepAlive = head.isKeepAlive && !bodyTooLarge
        var headers = HTTPHeaders([
            ("content-type", "application/json"),
            ("content-length", String(text.utf8.count)),
        ])
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        }
        let response = HTTPResponseHead(
            version: head.version, status: HTTPResponseStatus(statusCode: status), headers: headers
        )
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text)))), promise: nil)
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    private static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
