import BreakwaterWire
import Config
import Foundation
import Governance
import Logging
import NIOCore
import NIOHTTP1
import Providers
import Resilience
import Synchronization

/// How one HTTP listener is set up.
struct HTTPFrontSettings: Sendable {
    var requestTimeout: Duration
    var idleTimeout: Duration
    var metrics: HTTPFrontConfig.MetricsAccess
    /// A TCP listener: no peer credentials, so every call needs an agent token.
    var overTCP: Bool

    init(_ config: HTTPFrontConfig, overTCP: Bool) {
        requestTimeout = config.requestTimeout
        idleTimeout = config.idleTimeout
        metrics = config.metrics
        self.overTCP = overTCP
    }
}

/// The OpenAI-compatible HTTP front, one per HTTP connection, behind NIO's HTTP/1 codec and pipelining handler
/// (which hands it one request at a time and holds pipelined ones back until the answer ends):
/// `POST /v1/chat/completions` (plain, or `stream: true` as Server-Sent Events), `GET /v1/models`,
/// `GET /healthz`, `GET /metrics`.
///
/// A chat completion becomes exactly the call a REQUEST frame would make — the same `DaemonContext.makeCall`,
/// gate, resilience engine and audit — and the call's frames (RESPONSE, DATA, TRAILERS, ERROR, NOTICE) become the
/// HTTP answer: one JSON body, or one SSE event per DATA frame ending with `data: [DONE]`, or, when a stream fails
/// after it began, with an error event instead.
final class HTTPFrontHandler: ChannelInboundHandler, CallSink {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        case receiving(HTTPRequestHead, ByteBuffer)
        /// The request was answered before its body ended (too large): the rest is dropped, then the connection
        /// closes.
        case refused
        case calling(Exchange)
    }

    /// The chat-completions call in flight on this connection.
    private final class Exchange {
        let streamID: StreamID
        let request: HTTPRequestHead
        let stream: Bool
        var driver: CallDriver?
        /// The response head went out (a stream's, at its RESPONSE or while it waits for an approval).
        var headSent = false
        var response: CallResponse?
        /// A plain answer's JSON, whole before it is sent.
        var body: [UInt8] = []
        /// SSE comments while a stream waits for an approval, so proxies keep the connection.
        var waiting: RepeatedTask?

        init(streamID: StreamID, request: HTTPRequestHead, stream: Bool) {
            self.streamID = streamID
            self.request = request
            self.stream = stream
        }
    }

    let peer: PeerCredentials?
    private let shared: DaemonContext
    private let settings: HTTPFrontSettings
    /// Set once the pipeline is built (the guard sits in front of the codec and is made with this handler).
    weak var connectionGuard: HTTPConnectionGuard?
    private var state = State.idle
    private var context: ChannelHandlerContext?
    private var nextStreamID: StreamID = 1
    private var isBackpressured = false
    private var draining = false
    /// The last agent token this connection proved, so keep-alive requests with the same token are not checked
    /// (and audited) again each time.
    private var proven: (token: [UInt8], principal: Principal)?

    /// The paths served and the method each takes.
    static let endpoints: [String: HTTPMethod] = [
        "/v1/chat/completions": .POST, "/chat/completions": .POST, "/v1/models": .GET, "/models": .GET,
        "/healthz": .GET, "/metrics": .GET,
    ]

    /// SSE comment interval while a stream waits for an approval.
    static let waitingCommentInterval = TimeAmount.seconds(10)

    init(shared: DaemonContext, settings: HTTPFrontSettings, peer: PeerCredentials?) {
        self.shared = shared
        self.settings = settings
        self.peer = peer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The app went away: a call in flight is cancelled, its upstream request aborted.
        if case .calling(let exchange) = state {
            exchange.waiting?.cancel()
            exchange.driver?.cancel(reply: [])
        }
        state = .idle
        context.fireChannelInactive()
    }

    // MARK: Reading requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .idle = state else { return }
            let maxBody = Int(shared.limits.maxBody)
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBody {
                return refuseBody(head, context: context)
            }
            state = .receiving(head, context.channel.allocator.buffer(capacity: 0))
            // curl (and others) send `Expect: 100-continue` before a body over 1 KiB and wait up to a second for
            // the go-ahead: give it at once (NIO's pipeline handler passes informational heads through).
            if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version,
                                                                             status: .continue))), promise: nil)
            }
        case .body(var chunk):
            guard case .receiving(let head, var body) = state else { return }  // .refused: dropped
            guard body.readableBytes + chunk.readableBytes <= Int(shared.limits.maxBody) else {
                return refuseBody(head, context: context)
            }
            state = .idle  // so `body` is not shared while it grows
            body.writeBuffer(&chunk)
            state = .receiving(head, body)
        case .end:
            connectionGuard?.requestWhole()
            switch state {
            case .receiving(let head, let body):
                state = .idle
                serve(head, body: body, context: context)
            case .refused:
                context.close(promise: nil)
            case .idle, .calling:
                break
            }
        }
    }

    private func refuseBody(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        state = .refused
        shared.stats.protocolErrors.add(1, ordering: .relaxed)
        respond(head, error: ErrorMessage(code: .bodyTooLarge, message: "request body exceeds the limit of "
                                          + "\(shared.limits.maxBody) bytes (limits.max_body_bytes)"),
                status: .payloadTooLarge, close: true)
    }

    private func serve(_ head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard let method = Self.endpoints[path] else {
            return respond(head, error: ErrorMessage(code: .badRequest, message: "no such endpoint: \(path)"),
                           status: .notFound)
        }
        guard head.method == method else {
            return respond(head, error: ErrorMessage(code: .badRequest, message: "\(path) takes \(method) only"),
                           status: .methodNotAllowed, extraHeaders: [("allow", "\(method)")])
        }
        switch path {
        case "/v1/chat/completions", "/chat/completions": chatCompletion(head, body: body, context: context)
        case "/v1/models", "/models": respond(head, status: .ok, json: HTTPErrors.json(models()))
        case "/healthz":
            let (ready, report) = health()
            respond(head, status: ready ? .ok : .serviceUnavailable, json: HTTPErrors.json(report))
        default: metrics(head)
        }
    }

    // MARK: Chat completions

    private func chatCompletion(_ head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        let bytes = Array(body.readableBytesView)
        let chat: ChatRequest
        do {
            chat = try ChatRequest(json: bytes)
        } catch {
            return refuseCall(head, ErrorMessage(code: .badRequest, message: error.message))
        }
        let headers = head.headers
        // The route: X-Breakwater-Route when the app sets it, else the body's `model` when a route has that name
        // (as the Python client's transport decides).
        let route: String
        if let named = headers.first(name: "x-breakwater-route") {
            route = named
        } else if let model = chat.model, shared.router.routes[model] != nil {
            route = model
        } else {
            return refuseCall(head, ErrorMessage(code: .unknownRoute, message: "no route named \""
                + "\(chat.model ?? "")\": name a route as the model, or in the X-Breakwater-Route header"))
        }
        var principal: Principal?
        let client = clientName(headers)
        if shared.governance != nil || settings.overTCP {
            guard let token = Self.bearerToken(headers) else {
                return refuseCall(head, ErrorMessage(code: .unauthenticated, message: "an agent token is needed: "
                                                     + "Authorization: Bearer <token>"))
            }
            if let proven, proven.token == token {
                principal = proven.principal
            } else {
                switch shared.authenticate(credential: token, peer: peer, clientName: client) {
                case .success(let p?):
                    principal = p
                    proven = (token, p)
                case .success(nil):
                    return refuseCall(head, ErrorMessage(code: .unauthenticated, message: "credential refused"))
                case .failure(let refusal):
                    return refuseCall(head, ErrorMessage(refusal))
                }
            }
        }
        let timeout = headers.first(name: "x-breakwater-timeout-ms").flatMap { UInt32($0) }
        let requestID = headers.first(name: "x-breakwater-request-id") ?? headers.first(name: "x-request-id")
        if let requestID, requestID.utf8.count > 128 {
            return refuseCall(head, ErrorMessage(code: .badRequest, message: "the request id is longer than 128 bytes"))
        }
        let request = CallRequest(
            route: route, stream: chat.stream, timeoutMs: timeout, requestID: requestID,
            action: headers.first(name: "x-breakwater-action"), tenant: headers.first(name: "x-breakwater-tenant"),
            stepUpToken: headers.first(name: "x-breakwater-step-up-token").map { Array($0.utf8) })
        let id = nextStreamID
        nextStreamID &+= 2
        let exchange = Exchange(streamID: id, request: head, stream: chat.stream)
        let flow = ReaderFlow(window: nil, blocked: isBackpressured, stats: shared.stats)
        let origin = CallOrigin(peer: peer, principal: principal, clientName: client)
        switch shared.makeCall(request, chat: chat, streamID: id, origin: origin, sink: self, flow: flow,
                               eventLoop: context.eventLoop) {
        case .success(let driver):
            exchange.driver = driver
            state = .calling(exchange)
            shared.launch(driver)
        case .failure(let refusal):
            refuseCall(head, refusal)
        }
    }

    /// A call refused before it began (bad body, no route, no token): counted as a failed call, as on the socket.
    private func refuseCall(_ head: HTTPRequestHead, _ error: ErrorMessage) {
        shared.stats.callsFailed.add(1, ordering: .relaxed)
        respond(head, error: error)
    }

    static func bearerToken(_ headers: HTTPHeaders) -> [UInt8]? {
        guard let value = headers.first(name: "authorization") else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : Array(token.utf8)
    }

    /// The audit trail's client name: the app's User-Agent, marked as coming over HTTP.
    private func clientName(_ headers: HTTPHeaders) -> String {
        "http " + String((headers.first(name: "user-agent") ?? "-").prefix(64))
    }

    // MARK: CallSink

    func write(_ frames: [Frame], streamID: StreamID) {
        guard case .calling(let exchange) = state, exchange.streamID == streamID else { return }
        for frame in frames { deliver(frame, exchange) }
        context?.flush()
    }

    func callEnded(_ id: StreamID, frames: [Frame], outcome: CallOutcome) {
        guard case .calling(let exchange) = state, exchange.streamID == id else { return }
        shared.stats.callsInFlight.subtract(1, ordering: .relaxed)
        if outcome.countsAsFailed { shared.stats.callsFailed.add(1, ordering: .relaxed) }
        exchange.driver = nil
        exchange.waiting?.cancel()
        for frame in frames { deliver(frame, exchange) }
        if case .calling(let same) = state, same === exchange {
            // Ended with nothing to say (the app is gone): nothing more can be written.
            state = .idle
            context?.close(promise: nil)
        }
    }

    /// HTTP has no STARTED frame: the request goes out at once.
    func announceStarted(_ id: StreamID, then go: @escaping () -> Void) {
        go()
    }

    /// One frame of the call, as HTTP. The frame that ends the call (TRAILERS, ERROR) ends the response.
    private func deliver(_ frame: Frame, _ exchange: Exchange) {
        switch frame.type {
        case .response:
            exchange.response = try? CallResponse(frame: frame)
            if exchange.stream { sendStreamHead(exchange) }
        case .data:
            guard exchange.stream else { return exchange.body.append(contentsOf: frame.payload) }
            sendStreamHead(exchange)
            exchange.waiting?.cancel()
            exchange.waiting = nil
            writeEvent(frame.payload)
        case .trailers:
            let trailers = (try? CallTrailers(frame: frame)) ?? CallTrailers(error: .internalError)
            if let code = trailers.error {
                let error = ErrorMessage(code: code, message: trailers.message ?? code.name)
                if exchange.headSent { return endStream(exchange, error: error) }
                return finish(exchange) { respond(exchange.request, error: error) }
            }
            if exchange.stream { return endStream(exchange, error: nil) }
            finish(exchange) {
                respond(exchange.request, status: .ok, json: exchange.body, extraHeaders: answerHeaders(exchange))
            }
        case .error:
            let error = (try? ErrorMessage(frame: frame)) ?? ErrorMessage(code: .internalError, message: "internal error")
            if exchange.headSent { return endStream(exchange, error: error) }
            finish(exchange) { respond(exchange.request, error: error) }
        case .notice:
            // Waiting for an approval: a stream says so in SSE comments (and keeps saying it, so proxies keep the
            // connection); a plain request is simply held open.
            guard exchange.stream, let notice = try? CallNotice(frame: frame) else { return }
            sendStreamHead(exchange)
            writeComment(notice.message)
            let bound = NIOLoopBound(self, eventLoop: context!.eventLoop)
            exchange.waiting?.cancel()
            exchange.waiting = context?.eventLoop.scheduleRepeatedTask(
                initialDelay: Self.waitingCommentInterval, delay: Self.waitingCommentInterval
            ) { _ in
                bound.value.writeComment("still waiting for approval \(notice.approvalID ?? "")")
                bound.value.context?.flush()
            }
        default:
            break  // STARTED is never sent to an HTTP exchange
        }
    }

    /// Who answered and how: on every successful answer (for a stream, in its head).
    private func answerHeaders(_ exchange: Exchange) -> [(String, String)] {
        guard let r = exchange.response else { return [] }
        return [("x-breakwater-provider", r.provider), ("x-breakwater-model", r.model),
                ("x-breakwater-attempts", String(r.attempts)), ("x-breakwater-request-id", r.requestID),
                ("x-request-id", r.requestID)]
    }

    private func sendStreamHead(_ exchange: Exchange) {
        guard !exchange.headSent, let context else { return }
        exchange.headSent = true
        var headers = HTTPHeaders([("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                                   ("x-accel-buffering", "no")])
        headers.add(contentsOf: answerHeaders(exchange))
        if !keepsAlive(exchange.request) { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: exchange.request.version, status: .ok,
                                                             headers: headers))), promise: nil)
    }

    private func writeEvent(_ payload: [UInt8]) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: payload.count + 8)
        buffer.writeString("data: ")
        buffer.writeBytes(payload)
        buffer.writeString("\n\n")
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    private func writeComment(_ text: String) {
        guard let context else { return }
        let line = text.split(whereSeparator: \.isNewline).joined(separator: " ")
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: ": \(line)\n\n")))),
                      promise: nil)
    }

    /// The stream's last event: `data: [DONE]`, or — for a call that failed after the stream began — an error
    /// event in OpenAI's shape (the SDKs raise it), never a clean `[DONE]`.
    private func endStream(_ exchange: Exchange, error: ErrorMessage?) {
        finish(exchange) {
            if let error {
                writeEvent(HTTPErrors.json(HTTPErrors.body(for: error)))
            } else {
                writeEvent(Array("[DONE]".utf8))
            }
            endResponse(exchange.request, close: false)
        }
    }

    /// Leaves `.calling` and writes the exchange's last part.
    private func finish(_ exchange: Exchange, _ write: () -> Void) {
        guard case .calling(let current) = state, current === exchange else { return }
        exchange.waiting?.cancel()
        state = .idle
        write()
    }

    // MARK: Writing answers

    private func keepsAlive(_ request: HTTPRequestHead) -> Bool {
        request.isKeepAlive && !draining
    }

    private func respond(_ request: HTTPRequestHead, status: HTTPResponseStatus, json: [UInt8],
                         contentType: String = "application/json", extraHeaders: [(String, String)] = [],
                         close: Bool = false) {
        guard let context else { return }
        var headers = HTTPHeaders([("content-type", contentType), ("content-length", String(json.count))])
        headers.add(contentsOf: extraHeaders)
        let closing = close || !keepsAlive(request)
        if closing { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status,
                                                             headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: json)))),
                      promise: nil)
        endResponse(request, close: closing)
    }

    private func respond(_ request: HTTPRequestHead, error: ErrorMessage, status: HTTPResponseStatus? = nil,
                         extraHeaders: [(String, String)] = [], close: Bool = false) {
        respond(request, status: status ?? HTTPErrors.mapping(for: error).status,
                json: HTTPErrors.json(HTTPErrors.body(for: error)),
                extraHeaders: HTTPErrors.headers(for: error) + extraHeaders, close: close)
    }

    /// The response's end; then the connection closes (the app asked, or the daemon is draining) or waits for
    /// the next request.
    private func endResponse(_ request: HTTPRequestHead, close: Bool) {
        guard let context else { return }
        if close || !keepsAlive(request) {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            connectionGuard?.answerDone()
        }
    }

    // MARK: Flow control and draining

    /// The app's socket is full (or drained again): the call in flight stops (or goes on) reading its provider.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isBackpressured = !context.channel.isWritable
        if case .calling(let exchange) = state, let driver = exchange.driver {
            driver.flow.setBlocked(isBackpressured) { driver.resumeReceiving() }
        }
        context.fireChannelWritabilityChanged()
    }

    /// A graceful stop: a call that has not gone upstream goes back to the app (503, which the SDKs retry on a new
    /// connection, reaching the next daemon); a started one finishes, and the connection closes after it.
    func drain() {
        draining = true
        if case .calling(let exchange) = state { _ = exchange.driver?.handBack() }
    }

    // MARK: Models, health, metrics

    private func models() -> [String: Any] {
        let routes = shared.router.routes.keys.sorted()
        return ["object": "list", "data": routes.map { ["id": $0, "object": "model", "created": 0,
                                                         "owned_by": "breakwater"] }]
    }

    /// Ready when the daemon is serving (not draining) and at least one route has a target that could take a
    /// call: a provider key, and a breaker that is not open. Each route says why it is not.
    private func health() -> (Bool, [String: Any]) {
        var routes: [String: Any] = [:]
        var anyReady = false
        for (name, route) in shared.router.routes {
            let reasons = route.chain.map { (target: $0, why: shared.resilience.unavailability($0)) }
            if reasons.contains(where: { $0.why == nil }) {
                anyReady = true
                routes[name] = ["ready": true]
            } else {
                let why = reasons.map { "\($0.target.label): \($0.why ?? "")" }.joined(separator: "; ")
                routes[name] = ["ready": false, "why": route.chain.isEmpty ? "no targets" : why]
            }
        }
        var reasons: [String] = []
        if draining { reasons.append("draining: the daemon is stopping") }
        if !anyReady { reasons.append(routes.isEmpty ? "no routes are configured" : "no route can take a call") }
        let ready = reasons.isEmpty
        var report: [String: Any] = ["status": ready ? "ready" : "not_ready", "routes": routes]
        if !reasons.isEmpty { report["why"] = reasons }
        return (ready, report)
    }

    /// `/metrics`: for the config's admins by SO_PEERCRED unless `http.metrics: everyone` (on TCP, with no peer
    /// credentials, only then).
    private func metrics(_ head: HTTPRequestHead) {
        if settings.metrics == .admins {
            guard let peer, shared.router.config.admins.contains(peer) else {
                return respond(head, error: ErrorMessage(code: .forbidden, message: "/metrics is for the uids/gids "
                                                         + "in the config's admins (http.metrics: admins)"))
            }
        }
        respond(head, status: .ok, json: shared.metrics.exposition(shared),
                contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}
