import BreakwaterWire
import Foundation
import Governance
import Logging
import NIOCore
import Resilience
import Synchronization

/// In front of the HTTP codec, on raw bytes: what concerns an HTTP connection rather than one request — a slot in
/// the daemon's connection limits, a request not whole in time (slow-loris: 408), an idle keep-alive connection,
/// and the drain timeout at a graceful stop. Its answers are raw bytes written straight to the socket, because
/// the codec behind it may have no request to answer (a head never finished).
final class HTTPConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let shared: DaemonContext
    private let settings: HTTPFrontSettings
    private let peer: PeerCredentials?
    private weak var front: HTTPFrontHandler?
    private var context: ChannelHandlerContext?
    private var admitted = false
    private var closed = false

    /// Between requests: no request is being read or answered.
    private var betweenRequests = true
    /// When the first byte of the request being read arrived (nil: none yet).
    private var requestBegan: NIODeadline?
    /// Bytes arrived while a request was being answered: a pipelined next request, timed from that answer's end.
    private var bytesWhileAnswering = false
    /// When the connection last became idle.
    private var idleSince: NIODeadline
    private var timer: Scheduled<Void>?
    private var timerAt: NIODeadline?

    init(shared: DaemonContext, settings: HTTPFrontSettings, peer: PeerCredentials?, front: HTTPFrontHandler) {
        self.shared = shared
        self.settings = settings
        self.peer = peer
        self.front = front
        self.idleSince = .now()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        shared.stats.connections.add(1, ordering: .relaxed)
        if let refusal = shared.admitConnection(uid: peer?.uid) {
            let body = HTTPErrors.json(HTTPErrors.body(for: .init(code: .tooManyConnections, message: refusal)))
            return refuse("503 Service Unavailable", body: body, context: context)
        }
        admitted = true
        idleSince = context.eventLoop.now
        arm(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        shared.stats.connections.subtract(1, ordering: .relaxed)
        if admitted {
            admitted = false
            shared.releaseConnection(uid: peer?.uid)
        }
        closed = true
        timer?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        if betweenRequests {
            if requestBegan == nil {
                requestBegan = context.eventLoop.now
                arm(context)
            }
        } else {
            bytesWhileAnswering = true
        }
        context.fireChannelRead(data)
    }

    /// The front has the whole request: its clock stops until the answer is done.
    func requestWhole() {
        betweenRequests = false
        requestBegan = nil
        bytesWhileAnswering = false
    }

    /// The answer is written and the connection stays open: the next request's clock starts with its first byte
    /// (or now, if bytes of it already came while the answer was being written).
    func answerDone() {
        guard let context, !closed else { return }
        betweenRequests = true
        idleSince = context.eventLoop.now
        if bytesWhileAnswering { requestBegan = context.eventLoop.now }
        bytesWhileAnswering = false
        arm(context)
    }

    private var nextDeadline: NIODeadline? {
        guard betweenRequests else { return nil }
        if let requestBegan { return requestBegan + .nanoseconds(settings.requestTimeout.nanoseconds) }
        return idleSince + .nanoseconds(settings.idleTimeout.nanoseconds)
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard let due = nextDeadline, timerAt.map({ $0 > due }) ?? true else { return }
        timer?.cancel()
        timerAt = due
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { self.timerFired() }
    }

    /// Never cancelled when a request completes: it finds nothing due and re-arms for what is left, if anything.
    private func timerFired() {
        timer = nil
        timerAt = nil
        guard let context, !closed, let due = nextDeadline else { return }
        guard due <= context.eventLoop.now else { return arm(context) }
        if requestBegan != nil {
            shared.stats.protocolErrors.add(1, ordering: .relaxed)
            shared.logger.notice("closing HTTP connection: request not whole in time", metadata: [
                "request_timeout": "\(settings.requestTimeout)", "peer": "\(peer.map(\.description) ?? "tcp")",
            ])
            let body = HTTPErrors.json(HTTPErrors.body(for: .init(
                code: .timeout, message: "the request was not whole within http.request_timeout "
                    + "(\(settings.requestTimeout)) of its first byte")))
            refuse("408 Request Timeout", body: body, context: context)
        } else {
            closed = true
            context.close(promise: nil)  // idle keep-alive: closed quietly, as every HTTP server does
        }
    }

    /// A whole response of our own, then close.
    private func refuse(_ status: String, body: [UInt8], context: ChannelHandlerContext) {
        closed = true
        var buffer = context.channel.allocator.buffer(capacity: body.count + 128)
        buffer.writeString("HTTP/1.1 \(status)\r\ncontent-type: application/json\r\ncontent-length: \(body.count)"
                           + "\r\nconnection: close\r\n\r\n")
        buffer.writeBytes(body)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in bound.value.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // The front hands back a call that has not started; NIO's pipeline handler (behind the codec) closes the
            // connection after the answer in progress, or at once if there is none. A stream still going when the
            // drain timeout passes is cut.
            front?.drain()
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .nanoseconds(shared.drainTimeout.nanoseconds)) {
                bound.value.close(promise: nil)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }
}
