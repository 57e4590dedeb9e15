import BreakwaterWire
import CurlTransport
import Logging
import NIOCore
import Providers

/// One call's upstream attempt: turns libcurl's callbacks (on the engine thread) into protocol frames and hands
/// them to the connection's event loop.
///
/// `@unchecked Sendable`: the mutable fields below are touched only from the curl engine's thread, which calls a
/// transfer's delegate methods one at a time and in order; everything else is immutable.
final class UpstreamCall: TransferDelegate, @unchecked Sendable {
    let streamID: StreamID
    let requestID: String
    let target: ResolvedTarget
    let stream: Bool
    let maxFramePayload: Int
    let sink: NIOLoopBound<ConnectionHandler>
    let eventLoop: any EventLoop
    let logger: Logger
    var transferID: TransferID?

    // Engine-thread state.
    private var status = 0
    private var body: [UInt8] = []
    private var parser = SSEParser()
    private var translator: any StreamTranslator
    private var sentResponse = false
    private var sawDone = false
    private var usage: Usage?
    private var streamError: ProviderError?

    init(streamID: StreamID, requestID: String, target: ResolvedTarget, stream: Bool, maxFramePayload: Int,
         sink: NIOLoopBound<ConnectionHandler>, eventLoop: any EventLoop, logger: Logger) {
        self.streamID = streamID
        self.requestID = requestID
        self.target = target
        self.stream = stream
        self.maxFramePayload = maxFramePayload
        self.sink = sink
        self.eventLoop = eventLoop
        self.logger = logger
        self.translator = target.provider.adapter.makeStreamTranslator(model: target.model)
    }

    private var streaming: Bool { stream && (200..<300).contains(status) }

    func transferDidReceiveHead(status: Int, headers: [HTTPHeader]) {
        self.status = status
    }

    func transferDidReceiveBody(_ bytes: [UInt8]) {
        guard streaming else {
            body.append(contentsOf: bytes)
            return
        }
        guard streamError == nil, !sawDone else { return }
        var frames: [Frame] = []
        for event in parser.feed(bytes) {
            take(translator.translate(event), into: &frames)
            if sawDone || streamError != nil { break }
        }
        if !frames.isEmpty { send(frames, final: false) }
    }

    /// Applies canonical stream pieces: chunks become DATA frames (RESPONSE first), `.done` and `.error` end it.
    private func take(_ pieces: [StreamPiece], into frames: inout [Frame]) {
        for piece in pieces {
            guard !sawDone, streamError == nil else { return }
            switch piece {
            case .chunk(let chunk, let u):
                if let u { usage = u }
                if !sentResponse {
                    frames.append(responseFrame())
                    sentResponse = true
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
        send(finalFrames(result), final: true)
    }

    private func finalFrames(_ result: Result<Void, TransportError>) -> [Frame] {
        if case .failure(let error) = result {
            if case .cancelled = error.kind { return [] }  // the connection already answered the CANCEL
            let (code, message) = Self.describe(error, provider: target.provider.name)
            // curl's own error text names host and port only; request headers and bodies never reach it.
            logger.notice("upstream attempt failed", metadata: [
                "request_id": "\(requestID)", "provider": "\(target.provider.name)", "model": "\(target.model)",
                "error": "\(error.kind)", "curl_code": "\(error.curlCode.map(String.init) ?? "-")",
                "detail": "\(error.detail)",
            ])
            return failure(code, message)
        }
        if streaming {
            var frames: [Frame] = []
            if streamError == nil, !sawDone { take(translator.finish(), into: &frames) }
            if let streamError { return frames + failure(Self.code(for: streamError), streamError.message) }
            guard sawDone else {
                return frames + failure(.streamInterrupted,
                                        "provider \(target.provider.name) ended the stream before its end marker")
            }
            if !sentResponse { return frames + [responseFrame(), trailers()] }
            return frames + [trailers()]
        }
        do throws(ProviderError) {
            guard (200..<300).contains(status) else {
                throw target.provider.adapter.error(status: status, body: body)
            }
            let parsed = try target.provider.adapter.parseResponse(status: status, body: body, model: target.model)
            usage = parsed.usage
            return [responseFrame()] + dataFrames(parsed.body) + [trailers()]
        } catch {
            return failure(Self.code(for: error), error.message, upstreamStatus: status)
        }
    }

    /// Before any byte reached the app the call fails with ERROR; after, with error TRAILERS, so a cut stream
    /// never looks like a clean end.
    private func failure(_ code: ErrorCode, _ message: String, upstreamStatus: Int? = nil) -> [Frame] {
        if sentResponse {
            return [CallTrailers(error: .streamInterrupted, message: "stream cut after it began: " + message)
                .frame(streamID: streamID)]
        }
        let status = upstreamStatus.flatMap { (200..<300).contains($0) ? nil : UInt16(clamping: $0) }
        return [ErrorMessage(code: code, message: message, upstreamStatus: status,
                             provider: target.provider.name).frame(streamID: streamID)]
    }

    private func responseFrame() -> Frame {
        CallResponse(status: UInt16(clamping: status), provider: target.provider.name, model: target.model,
                     attempts: 1, requestID: requestID).frame(streamID: streamID)
    }

    private func trailers() -> Frame {
        CallTrailers(
            promptTokens: usage?.promptTokens.map { UInt32(clamping: $0) },
            completionTokens: usage?.completionTokens.map { UInt32(clamping: $0) },
            totalTokens: usage?.totalTokens.map { UInt32(clamping: $0) }
        ).frame(streamID: streamID)
    }

    private func dataFrames(_ bytes: [UInt8]) -> [Frame] {
        if bytes.count <= maxFramePayload { return [.data(streamID: streamID, bytes)] }
        return stride(from: 0, to: bytes.count, by: maxFramePayload).map {
            .data(streamID: streamID, Array(bytes[$0..<min($0 + maxFramePayload, bytes.count)]))
        }
    }

    private func send(_ frames: [Frame], final: Bool) {
        let sink = self.sink
        let id = streamID
        eventLoop.execute {
            sink.value.deliver(streamID: id, frames: frames, final: final)
        }
    }

    static func code(for error: ProviderError) -> ErrorCode {
        switch error.kind {
        case .badRequest: .badRequest
        case .upstreamStatus: .upstreamError
        case .malformedResponse: .upstreamMalformed
        }
    }

    static func describe(_ error: TransportError, provider: String) -> (ErrorCode, String) {
        switch error.kind {
        case .connectFailed: (.upstreamUnavailable, "cannot connect to provider \(provider)")
        case .connectionReset: (.upstreamUnavailable, "provider \(provider) closed the connection mid-answer")
        case .timedOut(let phase): (.timeout, "provider \(provider) timed out (\(phase))")
        case .malformedResponse: (.upstreamMalformed, "provider \(provider) sent a malformed HTTP answer")
        case .cancelled: (.cancelled, "call cancelled")
        case .other: (.upstreamUnavailable, "transport error talking to provider \(provider)")
        }
    }
}
