import BreakwaterWire
import Config
import CurlTransport
import Governance
import Logging
import NIOCore
import NIOExtras
import Providers
import Resilience
import Synchronization
import Systemd

/// The protocol state machine of one connection, on its event loop: HELLO, calls by stream id, CANCEL, PING,
/// draining on GOAWAY. Protocol violations get an ERROR frame on stream 0 and close this connection only.
final class ConnectionHandler: ChannelInboundHandler, CallSink {
    typealias InboundIn = Frame
    typealias OutboundOut = Frame

    private enum Phase { case awaitingHello, open, draining, closed }

    /// Frames waiting for the app's socket past `high` bytes pause the connection's calls; under `low` they go on.
    static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 256 << 10, high: 1 << 20)

    /// A call whose body is still arriving.
    private struct Pending {
        enum Kind {
            case call(CallRequest)
            case admin(AdminRequest)
            case authorize(AuthorizeRequest)

            /// The deadline the request names (admin commands name none).
            var timeoutMs: UInt32? {
                switch self {
                case .call(let request): request.timeoutMs
                case .authorize(let request): request.timeoutMs
                case .admin: nil
                }
            }
        }

        var kind: Kind
        var body: [UInt8]
        /// The call's credit, granted to even before its body is whole.
        var flow: ReaderFlow
        /// The call's deadline, by which its body must be whole, and when it passes.
        var timeout: Duration = .zero
        var due: NIODeadline = .distantFuture
    }

    private let shared: DaemonContext
    private var phase = Phase.awaitingHello
    private var pending: [StreamID: Pending] = [:]
    private var running: [StreamID: CallDriver] = [:]
    private var highestStreamID: StreamID = 0
    private var inputClosed = false
    private var context: ChannelHandlerContext?

    /// The connected process, from SO_PEERCRED.
    let peer: PeerCredentials?

    /// The agent the HELLO credential proved, when a policy is in force.
    private var principal: Principal?
    private var clientName: String?
    /// The client asked for STARTED before each call's first upstream request (so it can re-send the calls that
    /// never got one if this daemon dies).
    private var startedNotices = false
    /// A flush is queued for this tick's writes (`flushSoon`).
    private var flushScheduled = false
    /// The credit each call starts with when the client does flow control (its HELLO's `stream_window`).
    private var streamWindow: Int?
    /// The write buffer toward the app is over its high-water mark: every call on the connection stops reading
    /// its provider until it drains below the low mark (`channelWritabilityChanged`).
    private var isBackpressured = false
    /// This connection holds one of the daemon's connection slots (max_connections, max_connections_per_uid).
    private var admitted = false
    /// When the connection must have sent its HELLO (nil once it has).
    private var helloDue: NIODeadline?
    /// When the first bytes of the frame not yet whole arrived (nil: none is partly read).
    private var partialSince: NIODeadline?
    /// One timer for the connection's deadlines — its HELLO, a partial frame, incomplete bodies — and when it fires. It is armed when a
    /// read ends with something unfinished and no timer would fire by its deadline, and never cancelled when the
    /// frame or body completes: it finds nothing due and re-arms for what is left, if anything. So the usual
    /// connection, whose frames and bodies are whole by the end of a read or the next, costs no timer per call.
    private var deadlineTimer: Scheduled<Void>?
    private var deadlineTimerAt: NIODeadline?

    init(shared: DaemonContext, peer: PeerCredentials?) {
        self.shared = shared
        self.peer = peer
    }

    private var openCalls: Int { pending.count + running.count }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        shared.stats.connections.add(1, ordering: .relaxed)
        shared.logger.debug("connection", metadata: ["peer": "\(peer.map(\.description) ?? "unknown")"])
        context.fireChannelActive()
        if let refusal = shared.admitConnection(uid: peer?.uid) {
            return connectionError(WireError(.tooManyConnections, refusal), context: context)
        }
        admitted = true
        helloDue = context.eventLoop.now + .nanoseconds(shared.helloTimeout.nanoseconds)
        armDeadlineTimer(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        shared.stats.connections.subtract(1, ordering: .relaxed)
        if admitted {
            admitted = false
            shared.releaseConnection(uid: peer?.uid)
        }
        deadlineTimer?.cancel()
        phase = .closed
        cancelAll()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard phase != .closed else { return }
        do {
            try handle(frame, context: context)
        } catch {
            connectionError(error, context: context)
        }
    }

    private func handle(_ frame: Frame, context: ChannelHandlerContext) throws(WireError) {
        if phase == .awaitingHello {
            guard frame.type == .hello else {
                throw WireError(.helloRequired, "the first frame must be HELLO, got \(frame.type)")
            }
            let hello = try Hello(frame: frame)
            guard let version = hello.negotiate() else {
                throw WireError(.unsupportedVersion, "client speaks versions \(hello.minVersion ?? 0)-"
                    + "\(hello.maxVersion ?? 0); this daemon speaks \(ProtocolVersion.supported)")
            }
            helloDue = nil
            clientName = hello.clientName
            startedNotices = hello.startedNotices
            streamWindow = hello.streamWindow.map(Int.init)
            switch shared.authenticate(credential: hello.credential, peer: peer, clientName: hello.clientName) {
            case .success(let p): principal = p
            case .failure(let refusal): throw refusal
            }
            phase = .open
            context.writeAndFlush(wrapOutboundOut(
                Hello.server(version: version, limits: shared.limits, serverName: "breakwaterd",
                             startedNotices: startedNotices, streamWindow: hello.streamWindow).frame()
            ), promise: nil)
            return
        }
        switch frame.type {
        case .request, .admin, .authorize:
            try openCall(frame, context: context)
        case .data:
            try receiveBody(frame, context: context)
        case .cancel:
            cancel(frame.streamID, context: context)
        case .windowUpdate:
            try windowUpdate(frame)
        case .ping:  // 8 bytes: checked with the header
            context.writeAndFlush(wrapOutboundOut(frame.pong()), promise: nil)
        case .pong:
            break
        case .error:
            // A client's ERROR on a call's stream abandons that call; on stream 0 it is leaving.
            if frame.streamID == 0 { context.close(promise: nil) } else { cancel(frame.streamID, context: context) }
        case .hello:
            throw WireError(.protocolError, "HELLO was already exchanged on this connection")
        case .response, .trailers, .goAway, .notice, .started:
            throw WireError(.protocolError, "clients do not send \(frame.type) frames")
        }
    }

    private func openCall(_ frame: Frame, context: ChannelHandlerContext) throws(WireError) {
        let id = frame.streamID
        guard id & 1 == 1 else { throw WireError(.invalidStreamID, "call stream ids must be odd, got \(id)") }
        guard id > highestStreamID else {
            throw WireError(.invalidStreamID, "stream id \(id) is not higher than the last one (\(highestStreamID))")
        }
        highestStreamID = id
        let kind: Pending.Kind
        do {
            switch frame.type {
            case .admin: kind = .admin(try AdminRequest(frame: frame))
            case .authorize: kind = .authorize(try AuthorizeRequest(frame: frame))
            default: kind = .call(try CallRequest(frame: frame))
            }
        } catch where !error.code.isConnectionError {
            // The call alone fails; DATA that follows for it is dropped (its id is below the highest).
            shared.stats.callsFailed.add(1, ordering: .relaxed)
            context.writeAndFlush(wrapOutboundOut(ErrorMessage(error).frame(streamID: id)), promise: nil)
            return
        }
        if phase == .draining {
            context.writeAndFlush(wrapOutboundOut(ErrorMessage(
                code: .notAccepted, message: "daemon is draining; send the call again on a new connection"
            ).frame(streamID: id)), promise: nil)
            return
        }
        guard openCalls < Int(shared.limits.maxConcurrentCalls) else {
            context.writeAndFlush(wrapOutboundOut(ErrorMessage(
                code: .tooManyCalls,
                message: "connection already has \(openCalls) calls open (limit \(shared.limits.maxConcurrentCalls))"
            ).frame(streamID: id)), promise: nil)
            return
        }
        let flow = ReaderFlow(window: streamWindow, blocked: isBackpressured, stats: shared.stats)
        if frame.flags.contains(.endStream) {
            dispatch(id, Pending(kind: kind, body: [], flow: flow), context: context)
        } else {
            // The body must be whole within the call's deadline (admin commands: the default one).
            var timeout = shared.defaultCallTimeout
            if let ms = kind.timeoutMs { timeout = .milliseconds(Int64(ms)) }
            pending[id] = Pending(kind: kind, body: [], flow: flow, timeout: timeout,
                                  due: context.eventLoop.now + .nanoseconds(timeout.nanoseconds))
        }
    }

    /// More credit for a call's DATA. For a call that already ended (or an admin command) it is ignored, as
    /// CANCEL is; on a stream never opened, on a connection without flow control, or past the most a stream may
    /// hold, it is a protocol error.
    private func windowUpdate(_ frame: Frame) throws(WireError) {
        let id = frame.streamID
        let update = try WindowUpdate(frame: frame)
        guard streamWindow != nil else {
            throw WireError(.protocolError, "WINDOW_UPDATE on a connection whose HELLO set no stream_window")
        }
        if id > highestStreamID || id & 1 == 0 {
            throw WireError(.protocolError, "WINDOW_UPDATE on stream \(id), which was never opened")
        }
        let driver = running[id]
        guard let flow = driver?.flow ?? pending[id]?.flow else { return }
        let granted = flow.grant(Int(update.increment), max: Int(WindowUpdate.maxCredit)) {
            driver?.resumeReceiving()
        }
        if !granted {
            throw WireError(.protocolError, "WINDOW_UPDATE took stream \(id)'s credit past \(WindowUpdate.maxCredit)")
        }
    }

    /// The app's socket is taking no more (NIO's write buffer passed its high-water mark) or took it all again:
    /// every call on the connection stops or goes on reading its provider.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isBackpressured = !context.channel.isWritable
        for call in running.values {
            call.flow.setBlocked(isBackpressured) { call.resumeReceiving() }
        }
        for call in pending.values { call.flow.setBlocked(isBackpressured) {} }
        context.fireChannelWritabilityChanged()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        armDeadlineTimer(context)
        context.fireChannelReadComplete()
    }

    /// Makes sure a timer fires by the earliest deadline watched (HELLO, a partial frame, an incomplete body).
    private func armDeadlineTimer(_ context: ChannelHandlerContext) {
        guard helloDue != nil || partialSince != nil || !pending.isEmpty else { return }
        var next = partialSince.map { $0 + .nanoseconds(shared.frameTimeout.nanoseconds) } ?? .distantFuture
        if let helloDue, helloDue < next { next = helloDue }
        for call in pending.values where call.due < next { next = call.due }
        guard next != .distantFuture, deadlineTimerAt.map({ $0 > next }) ?? true else { return }
        deadlineTimer?.cancel()
        deadlineTimerAt = next
        deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: next) {
            self.deadlinesDue()
        }
    }

    /// The deadline timer fired: no HELLO yet, or a frame still not whole, closes the connection (STALLED); bodies
    /// overdue fail their calls (TIMEOUT); then the timer is armed again for what is left.
    private func deadlinesDue() {
        deadlineTimer = nil
        deadlineTimerAt = nil
        guard let context, phase != .closed else { return }
        let now = context.eventLoop.now
        if let helloDue, helloDue <= now {
            return connectionError(WireError(.stalled, "no HELLO within hello_timeout (\(shared.helloTimeout)) "
                                                 + "of connecting"), context: context)
        }
        let frameTimeout = shared.frameTimeout
        if let since = partialSince, since + .nanoseconds(frameTimeout.nanoseconds) <= now {
            return connectionError(WireError(.stalled, "a frame was not whole within frame_timeout "
                                                 + "(\(frameTimeout)) of its first byte"), context: context)
        }
        for (id, call) in pending where call.due <= now { bodyTimedOut(id, after: call.timeout) }
        armDeadlineTimer(context)
    }

    /// A call whose body did not arrive whole by its deadline fails alone (TIMEOUT); the connection goes on.
    private func bodyTimedOut(_ id: StreamID, after timeout: Duration) {
        guard let context, phase != .closed, pending.removeValue(forKey: id) != nil else { return }
        shared.stats.callsFailed.add(1, ordering: .relaxed)
        context.writeAndFlush(wrapOutboundOut(ErrorMessage(
            code: .timeout, message: "the request body was not whole within the call's deadline (\(timeout))"
        ).frame(streamID: id)), promise: nil)
        closeIfIdle(context: context)
    }

    private func receiveBody(_ frame: Frame, context: ChannelHandlerContext) throws(WireError) {
        let id = frame.streamID
        guard var call = pending.removeValue(forKey: id) else {
            // DATA for a call that was refused, cancelled or finished is dropped; for a stream never opened it is
            // a protocol violation.
            if id > highestStreamID || id & 1 == 0 {
                throw WireError(.protocolError, "DATA on stream \(id), which was never opened")
            }
            return
        }
        guard call.body.count + frame.payload.count <= Int(shared.limits.maxBody) else {
            throw WireError(.bodyTooLarge, "request body exceeds the limit of \(shared.limits.maxBody) bytes")
        }
        call.body.append(contentsOf: frame.payload)
        if frame.flags.contains(.endStream) {
            dispatch(id, call, context: context)
        } else {
            pending[id] = call
        }
    }

    private func dispatch(_ id: StreamID, _ complete: Pending, context: ChannelHandlerContext) {
        switch complete.kind {
        case .call(let request): start(id, request: request, body: complete.body, flow: complete.flow,
                                       context: context)
        case .admin(let request): admin(id, request: request, body: complete.body, context: context)
        case .authorize(let request): authorize(id, request: request, body: complete.body, flow: complete.flow,
                                                context: context)
        }
    }

    /// Admin commands answer at once: RESPONSE + one DATA frame of JSON + TRAILERS, or ERROR.
    private func admin(_ id: StreamID, request: AdminRequest, body: [UInt8], context: ChannelHandlerContext) {
        let answer = AdminCommands.run(request.command, arguments: body, peer: peer, shared: shared)
        switch answer {
        case .success(let json):
            let frames = [
                CallResponse(status: 200, provider: "breakwaterd", model: request.command, attempts: 0,
                             requestID: RequestID.make()).frame(streamID: id),
                Frame.data(streamID: id, json),
                CallTrailers().frame(streamID: id),
            ]
            for f in frames { context.write(wrapOutboundOut(f), promise: nil) }
            context.flush()
        case .failure(let error):
            context.writeAndFlush(wrapOutboundOut(error.frame(streamID: id)), promise: nil)
        }
        closeIfIdle(context: context)
    }

    private func start(_ id: StreamID, request: CallRequest, body: [UInt8], flow: ReaderFlow,
                       context: ChannelHandlerContext) {
        let origin = CallOrigin(peer: peer, principal: principal, clientName: clientName)
        launch(id, shared.makeCall(request, body: body, streamID: id, origin: origin, sink: self, flow: flow,
                                   eventLoop: context.eventLoop), context: context)
    }

    /// A call (or action) made: it runs under `id`; refused: the app is told at once.
    private func launch(_ id: StreamID, _ made: Result<CallDriver, ErrorMessage>, context: ChannelHandlerContext) {
        switch made {
        case .success(let driver):
            running[id] = driver
            shared.launch(driver)
        case .failure(let refusal):
            shared.stats.callsFailed.add(1, ordering: .relaxed)
            context.writeAndFlush(wrapOutboundOut(refusal.frame(streamID: id)), promise: nil)
            closeIfIdle(context: context)
        }
    }

    /// AUTHORIZE: the action goes through the gate (and a person, when the policy says so) like a call, and ends
    /// with the decision.
    private func authorize(_ id: StreamID, request: AuthorizeRequest, body: [UInt8], flow: ReaderFlow,
                           context: ChannelHandlerContext) {
        let made: Result<CallDriver, ErrorMessage>
        do {
            let action = try AuthorizedAction(name: request.action, arguments: body)
            made = shared.makeAction(request, action: action, streamID: id,
                                     origin: CallOrigin(peer: peer, principal: principal, clientName: clientName),
                                     sink: self, flow: flow, eventLoop: context.eventLoop)
        } catch {
            made = .failure(ErrorMessage(error))
        }
        launch(id, made, context: context)
    }

    /// Frames of a call still running, on this event loop. Frames for a call that ended (cancelled) are dropped.
    func write(_ frames: [Frame], streamID: StreamID) {
        guard let context, running[streamID] != nil else { return }
        for frame in frames { context.write(wrapOutboundOut(frame), promise: nil) }
        flushSoon(context)
    }

    /// One flush for everything the connection's calls write in this event-loop tick: the answers of calls whose
    /// upstream replies reached the loop together go out in one write, not one each. Runs after the jobs already
    /// queued (libcurl's completions arrive as one job per transfer), never later than the next loop turn.
    private func flushSoon(_ context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            bound.value.flushScheduled = false
            bound.value.context?.flush()
        }
    }

    /// A call's end, from its driver — the one place a call leaves `running` and the in-flight and failed counts
    /// change: its last frames (none when the connection is gone), then close if the connection is done.
    func callEnded(_ id: StreamID, frames: [Frame], outcome: CallOutcome) {
        guard running.removeValue(forKey: id) != nil else { return }
        shared.stats.callsInFlight.subtract(1, ordering: .relaxed)
        if outcome.countsAsFailed { shared.stats.callsFailed.add(1, ordering: .relaxed) }
        guard phase != .closed, let context else { return }
        if !frames.isEmpty {
            for frame in frames { context.write(wrapOutboundOut(frame), promise: nil) }
            // A connection about to close flushes now (a close drops what was not flushed); others share one.
            if (phase == .draining || inputClosed) && openCalls == 0 { context.flush() } else { flushSoon(context) }
        }
        closeIfIdle(context: context)
    }

    /// Before a call's first upstream request: STARTED to a client that asked for it, and `go` (the request) only
    /// once those bytes are in the socket. So if this process dies, every call the client saw no STARTED for had
    /// not reached a provider, and the client may send it again without doubling it.
    ///
    /// The STARTED frames of the calls that begin in one event-loop tick go out in one flush (one syscall for a
    /// burst of calls, not one each); each call's request follows as soon as its frame is written.
    func announceStarted(_ id: StreamID, then go: @escaping () -> Void) {
        guard startedNotices, let context else { return go() }
        guard running[id] != nil else { return }
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenSuccess { go() }
        context.write(wrapOutboundOut(Frame(streamID: id, type: .started)), promise: written)
        flushSoon(context)
    }

    private func cancel(_ id: StreamID, context: ChannelHandlerContext) {
        let reply = ErrorMessage(code: .cancelled, message: "call cancelled").frame(streamID: id)
        if let call = running[id] {
            call.cancel(reply: [reply])
        } else if pending.removeValue(forKey: id) != nil {
            context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
            closeIfIdle(context: context)
        }  // else it already ended: nothing to do
    }

    /// The connection is gone or being closed: every call stops, and nothing more is written for them.
    private func cancelAll() {
        for call in running.values { call.cancel(reply: []) }
        pending.removeAll()
    }

    /// While draining, or after the client closed its side, the connection closes once its last call ends.
    private func closeIfIdle(context: ChannelHandlerContext) {
        if (phase == .draining || inputClosed), openCalls == 0 {
            phase = .closed
            context.close(promise: nil)
        }
    }

    private func connectionError(_ error: any Error, context: ChannelHandlerContext) {
        guard phase != .closed else { return }
        let wire = (error as? WireError) ?? WireError(.internalError, "internal error")
        shared.stats.protocolErrors.add(1, ordering: .relaxed)
        shared.logger.notice("closing connection after protocol error", metadata: [
            "code": "\(wire.code.name)", "reason": "\(wire.message)",
        ])
        phase = .closed
        cancelAll()
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(ErrorMessage(wire).frame(streamID: 0))).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is WireError {
            connectionError(error, context: context)
        } else {
            // I/O errors (peer reset): nothing can be told to the peer.
            phase = .closed
            cancelAll()
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            drain(context: context)
        } else if let partial = event as? PartialFrame {
            // Timed by the deadline timer, armed when the read ends.
            switch partial {
            case .started: partialSince = context.eventLoop.now
            case .none: partialSince = nil
            }
        } else if let e = event as? ChannelEvent, e == .inputClosed {
            inputClosed = true
            pending.removeAll()  // bodies that can no longer complete
            closeIfIdle(context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// GOAWAY, then close once in-flight calls are done or the drain timeout passes.
    private func drain(context: ChannelHandlerContext) {
        guard phase == .open || phase == .awaitingHello else {
            if phase != .closed { return }
            return
        }
        if phase == .awaitingHello {
            phase = .closed
            context.close(promise: nil)
            return
        }
        phase = .draining
        context.writeAndFlush(wrapOutboundOut(GoAway(lastStreamID: highestStreamID).frame()), promise: nil)
        // Calls that have not gone upstream yet go back to the client to be sent to the next daemon.
        for id in running.keys.sorted() { _ = running[id]?.handBack() }
        closeIfIdle(context: context)
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timeout = TimeAmount.nanoseconds(shared.drainTimeout.nanoseconds)
        context.eventLoop.scheduleTask(in: timeout) {
            loopBound.value.forceClose()
        }
    }

    private func forceClose() {
        guard phase != .closed, let context else { return }
        phase = .closed
        cancelAll()
        context.close(promise: nil)
    }
}
