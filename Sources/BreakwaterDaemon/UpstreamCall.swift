import BreakwaterWire
import CurlTransport
import Foundation
import NIOCore
import Providers
import Resilience
import Synchronization

/// How one upstream attempt ended, as the call driver needs it.
struct AttemptResult: Sendable {
    var outcome: AttemptOutcome
    /// For success: RESPONSE (unless a stream already sent it), DATA, TRAILERS. Empty for a failure: the driver
    /// decides what the app is told.
    var frames: [Frame]
    /// A readable, secret-free reason for a failure.
    var reason: String
    var upstreamStatus: Int?
    var rateLimit: RateLimitInfo
    var duration: Duration
    var usage: Usage?
}

/// One upstream attempt: turns libcurl's callbacks (within the curl engine's turns) into protocol frames and
/// outcomes, and hands them to the call's driver on the connection's event loop.
///
/// `@unchecked Sendable`: the mutable fields below are touched only by the curl engine's delegate callbacks, which
/// come one at a time and in order, under the engine's turn lock (on its thread or an event loop's); everything
/// else is immutable. (The transfer's id, the one fact the event loop needs, is the driver's, in its `Attempt`.)
final class UpstreamCall: TransferDelegate, @unchecked Sendable {
    let streamID: StreamID
    let requestID: String
    let target: ResolvedTarget
    let stream: Bool
    let attemptNumber: Int
    let maxFramePayload: Int
    let driver: NIOLoopBound<CallDriver>
    let eventLoop: any EventLoop
    /// The call's credit and its connection's room: a streamed answer pauses while the app is behind.
    let flow: ReaderFlow
    let stats: DaemonStats
    let metrics: DaemonMetrics
    /// Hands reports to the event loop, one job per engine turn.
    let handoff: EngineHandoff
    let startedAt = ContinuousClock.now

    // The engine's state (its delegate callbacks only).
    private var status = 0
    private var headers: [HTTPHeader] = []
    private var body: [UInt8] = []
    private var parser = SSEParser()
    private var translator: any StreamTranslator
    private var sentResponse = false
    private var sawDone = false
    private var usage: Usage?
    private var streamError: ProviderError?
    /// A streamed event too large for one DATA frame arrived: nothing more of this stream is forwarded.
    private var oversized = false

    init(streamID: StreamID, requestID: String, target: ResolvedTarget, stream: Bool, attemptNumber: Int,
         maxFramePayload: Int, flow: ReaderFlow, stats: DaemonStats, metrics: DaemonMetrics, handoff: EngineHandoff,
         driver: NIOLoopBound<CallDriver>, eventLoop: any EventLoop) {
        self.metrics = metrics
        self.handoff = handoff
        self.flow = flow
        self.stats = stats
        self.streamID = streamID
        self.requestID = requestID
        self.target = target
        self.stream = stream
        self.attemptNumber = attemptNumber
        self.maxFramePayload = maxFramePayload
        self.driver = driver
        self.eventLoop = eventLoop
        self.translator = target.provider.adapter.makeStreamTranslator(model: target.model)
    }

    private var streaming: Bool { stream && (200..<300).contains(status) }

    func transferDidReceiveHead(status: Int, headers: [HTTPHeader]) {
        self.status = status
        self.headers = headers
    }

    /// A streamed answer stops being read while the app is behind (credit spent, or its socket's buffer full);
    /// an error body or a whole answer is read on: it is needed whole, and the driver then holds it anyway.
    func transferShouldPause() -> Bool {
        streaming && flow.shouldPause()
    }

    func transferDidReceiveBody(_ bytes: [UInt8]) {
        stats.upstreamBodyBytes.add(bytes.count, ordering: .relaxed)
        guard streaming else {
            body.append(contentsOf: bytes)
            return
        }
        guard streamError == nil, !sawDone, !oversized else { return }
        var frames: [Frame] = []
        for event in parser.feed(bytes) {
            take(translator.translate(event), into: &frames)
            if sawDone || streamError != nil || oversized { break }
        }
        let driver = self.driver
        if !frames.isEmpty {
            let ready = frames
            let bytes = frames.reduce(0) { $0 + $1.payload.count }
            handoff.send(eventLoop, bytes: bytes) { driver.value.attemptProgress(ready, from: self) }
        }
        if oversized {
            let limit = maxFramePayload
            handoff.send(eventLoop) { driver.value.attemptOversized(from: self, limit: limit) }
        }
    }

    /// Applies canonical stream pieces: chunks become DATA frames (RESPONSE first), `.done` and `.error` end it.
    private func take(_ pieces: [StreamPiece], into frames: inout [Frame]) {
        for piece in pieces {
            guard !sawDone, streamError == nil, !oversized else { return }
            switch piece {
            case .chunk(let chunk, _) where chunk.count > maxFramePayload:
                // Each streamed event is one DATA frame (PROTOCOL.md): one that does not fit ends the stream.
                oversized = true
            case .chunk(let chunk, let u):
                if let u { usage = u }
                if !sentResponse {
                    frames.append(responseFrame())
                    sentResponse = true
                    metrics.firstChunk(target, after: ContinuousClock.now - startedAt)
                }
                frames.append(contentsOf: dataFrames(chunk))
            case .done:
                sawDone = true
            case .error(let e):
                streamError = e
            }
        }
    }

    func transferDidComplete(_ result: Result<Void, TransportError>) {
        // Cancelled (or cut short for an oversized event): the driver already moved on.
        guard !oversized, let outcome = finalResult(result) else { return }
        let driver = self.driver
        handoff.send(eventLoop) { driver.value.attemptFinished(outcome, from: self) }
    }

    private func finalResult(_ result: Result<Void, TransportError>) -> AttemptResult? {
        let duration = ContinuousClock.now - startedAt
        let rateLimit = RateLimitHeaders.parse(headers.map { ($0.name, $0.value) },
                                               wallNow: Date().timeIntervalSince1970)
        func failure(_ outcome: AttemptOutcome, _ reason: String, status: Int? = nil) -> AttemptResult {
            AttemptResult(outcome: outcome, frames: [], reason: reason, upstreamStatus: status,
                          rateLimit: rateLimit, duration: duration, usage: usage)
        }
        if case .failure(let error) = result {
            if case .cancelled = error.kind { return nil }
            return failure(.transport(Self.transportFailure(error)), Self.describe(error))
        }
        if streaming {
            var frames: [Frame] = []
            if streamError == nil, !sawDone { take(translator.finish(), into: &frames) }
            if let streamError {
                return failure(.streamError(providerCode: streamError.providerCode), streamError.message)
            }
            guard sawDone else {
                return failure(.transport(.connectionReset), "the stream ended before its end marker")
            }
            if !sentResponse { frames.append(responseFrame()) }
            return AttemptResult(outcome: .success, frames: frames + [trailers()], reason: "",
                                 upstreamStatus: status, rateLimit: rateLimit, duration: duration, usage: usage)
        }
        let adapter = target.provider.adapter
        guard (200..<300).contains(status) else {
            let e = adapter.error(status: status, body: body)
            return failure(.status(status, providerCode: e.providerCode), e.message, status: status)
        }
        do {
            let parsed = try adapter.parseResponse(status: status, body: body, model: target.model)
            usage = parsed.usage
            return AttemptResult(outcome: .success,
                                 frames: [responseFrame()] + dataFrames(parsed.body) + [trailers()],
                                 reason: "", upstreamStatus: status, rateLimit: rateLimit, duration: duration,
                                 usage: usage)
        } catch {
            return failure(.transport(.malformedResponse), error.message, status: status)
        }
    }

    private func responseFrame() -> Frame {
        CallResponse(status: UInt16(clamping: status), provider: target.provider.name, model: target.model,
                     attempts: UInt16(clamping: attemptNumber), requestID: requestID).frame(streamID: streamID)
    }

    private func trailers() -> Frame {
        CallTrailers(
            promptTokens: usage?.promptTokens.map { UInt32(clamping: $0) },
            completionTokens: usage?.completionTokens.map { UInt32(clamping: $0) },
            totalTokens: usage?.totalTokens.map { UInt32(clamping: $0) }
        ).frame(streamID: streamID)
    }

    /// The answer's DATA frames, each at most `max_frame_payload`; their bytes are spent from the call's credit.
    private func dataFrames(_ bytes: [UInt8]) -> [Frame] {
        flow.spend(bytes.count)
        if bytes.count <= maxFramePayload { return [.data(streamID: streamID, bytes)] }
        return stride(from: 0, to: bytes.count, by: maxFramePayload).map {
            .data(streamID: streamID, Array(bytes[$0..<min($0 + maxFramePayload, bytes.count)]))
        }
    }

    static func transportFailure(_ error: TransportError) -> TransportFailure {
        switch error.kind {
        case .connectFailed: .connectFailed
        case .timedOut: .timeout
        case .malformedResponse: .malformedResponse
        case .localConfiguration: .localConfiguration
        case .connectionReset, .cancelled, .other: .connectionReset
        }
    }

    /// Secret-free: curl's error text names host and port only; request headers and bodies never reach it.
    static func describe(_ error: TransportError) -> String {
        switch error.kind {
        case .connectFailed: "cannot connect (\(error.detail))"
        case .connectionReset: "connection closed mid-answer (\(error.detail))"
        case .timedOut(.connectionWait): "timed out waiting for a connection to the provider (\(error.detail))"
        case .timedOut(let phase): "timed out (\(phase))"
        case .malformedResponse: "malformed HTTP answer"
        case .cancelled: "cancelled"
        case .localConfiguration: "the request could not be made here (\(error.detail))"
        case .other: "transport error (\(error.detail))"
        }
    }
}
