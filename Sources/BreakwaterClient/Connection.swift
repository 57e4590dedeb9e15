import BreakwaterWire
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What a call receives from the daemon, in order: `.response`, `.data`..., `.trailers`; or one `.failed`.
enum CallEvent: Sendable {
    case notice(CallNotice)
    case response(CallResponse)
    case data([UInt8])
    case trailers(CallTrailers)
    case failed(BreakwaterError)
}

/// One connection to the daemon: HELLO done at creation, a reader thread that routes frames to calls by stream id.
///
/// Calls register a sink before their REQUEST is written, so no answer can arrive for an unknown call. When the
/// connection breaks, every open call fails and the client makes a new connection for the next call: with
/// `.notStarted` when the daemon never said STARTED for it (it may be sent again), else `.daemonRestarted`.
final class Connection: Sendable {
    typealias Sink = @Sendable (CallEvent) -> Void

    private struct OpenCall {
        var sink: Sink
        /// The daemon said STARTED: the call's first upstream request may have gone out.
        var started = false
    }

    private struct State {
        var nextStreamID: StreamID = 1
        var sinks: [StreamID: OpenCall] = [:]
        var closed = false
        /// Set by GOAWAY: no new calls here.
        var draining = false
        /// The socket is open. It is closed only by the reader, under both locks, so no write or shutdown can
        /// reach an fd number the process has since given to another file.
        var fdOpen = true
        /// This side ended the connection (`BreakwaterClient.close()`): its calls fail with `.connectionLost`
        /// rather than being sent again.
        var closedByClient = false
    }

    let fd: Int32
    let serverLimits: Limits
    /// The daemon agreed to send STARTED before each call's first upstream request.
    let startedNotices: Bool
    private let state = Mutex(State())
    /// Serialises writers so frames from concurrent calls never interleave mid-frame.
    private let writeLock = Mutex(())

    /// Connects, exchanges HELLO (waiting at most `helloTimeoutMs` for the daemon's), and starts the reader.
    init(path: String, hello: Hello, helloTimeoutMs: Int) throws(BreakwaterError) {
        let fd: Int32
        do {
            fd = try Socket.connectUnix(path: path)
        } catch {
            throw BreakwaterError(.daemonUnavailable, "cannot connect to \(path): \(error.message)")
        }
        var decoder = FrameDecoder(limits: .preHello)
        do {
            try Socket.writeAll(fd, hello.frame().encoded())
            Socket.setReceiveTimeout(fd, milliseconds: helloTimeoutMs)
            var buffer = [UInt8](repeating: 0, count: 4096)
            var answer: Frame?
            while answer == nil {
                let n = try Socket.read(fd, into: &buffer)
                guard n > 0 else { throw BreakwaterError(.daemonUnavailable, "daemon closed the connection at HELLO") }
                decoder.feed(buffer[0..<n])
                answer = try decoder.next()
            }
            Socket.setReceiveTimeout(fd, milliseconds: 0)
            guard let answer else { throw BreakwaterError(.protocolViolation, "no HELLO") }
            if answer.type == .error {
                throw BreakwaterError(try ErrorMessage(frame: answer), connection: true)
            }
            let serverHello = try Hello(frame: answer)
            guard serverHello.version == ProtocolVersion.v1, let limits = serverHello.limits else {
                throw BreakwaterError(.protocolViolation, "daemon HELLO has no usable version or limits")
            }
            self.serverLimits = limits
            self.startedNotices = serverHello.startedNotices
            decoder.limits = limits
        } catch let e as BreakwaterError {
            Socket.closeFD(fd)
            throw e
        } catch let e as Socket.Failure {
            Socket.closeFD(fd)
            throw BreakwaterError(.daemonUnavailable, "HELLO failed: \(e.message)")
        } catch let e as WireError {
            Socket.closeFD(fd)
            throw BreakwaterError(.protocolViolation, e.description)
        } catch {
            Socket.closeFD(fd)
            throw BreakwaterError(.protocolViolation, "HELLO failed")
        }
        self.fd = fd
        let leftover = decoder
        Socket.spawnThread { [self] in self.readLoop(decoder: leftover) }
    }

    var isUsable: Bool { state.withLock { !$0.closed && !$0.draining && $0.nextStreamID < 0x7FFF_FFFF } }

    /// Registers a call, then writes the frames `makeFrames` builds for its stream id. Returns the id, or nil when
    /// this connection takes no new calls. Id allocation and the write happen under one lock: ids must reach the
    /// daemon in increasing order, which two calls racing between allocating and writing would break.
    func open(sink: @escaping Sink, makeFrames: (StreamID) -> [Frame]) throws(BreakwaterError) -> StreamID? {
        do {
            return try writeLock.withLock { _ throws(Socket.Failure) -> StreamID? in
                let allocated: StreamID? = state.withLock { s in
                    guard !s.closed, s.fdOpen, !s.draining, s.nextStreamID < 0x7FFF_FFFF else { return nil }
                    let id = s.nextStreamID
                    s.nextStreamID += 2
                    s.sinks[id] = OpenCall(sink: sink)
                    return id
                }
                guard let id = allocated else { return nil }
                var bytes: [UInt8] = []
                for f in makeFrames(id) { f.encode(into: &bytes) }
                do throws(Socket.Failure) {
                    try Socket.writeAll(fd, bytes)
                } catch {
                    forget(id)
                    throw error
                }
                return id
            }
        } catch {
            // The call's frames did not all reach the daemon, so it never started: safe to send again.
            shutdown(byClient: false)
            throw BreakwaterError(.notStarted, "cannot write to the daemon: \(error.message)")
        }
    }

    /// Forgets a call (its sink will get nothing more).
    func forget(_ id: StreamID) {
        _ = state.withLock { $0.sinks.removeValue(forKey: id) }
    }

    func send(_ frames: [Frame]) throws(BreakwaterError) {
        var bytes: [UInt8] = []
        for f in frames { f.encode(into: &bytes) }
        do {
            try writeLock.withLock { _ throws(Socket.Failure) in
                guard state.withLock({ $0.fdOpen }) else { throw Socket.Failure(call: "write", errno: EPIPE) }
                try Socket.writeAll(fd, bytes)
            }
        } catch {
            shutdown(byClient: false)
            throw BreakwaterError(.connectionLost, "cannot write to the daemon: \(error.message)")
        }
    }

    /// Ends the connection: the reader sees EOF and fails the calls still open. `byClient`: the app closed it (its
    /// calls fail with `.connectionLost`); false: a write found the daemon gone (its calls are judged by STARTED).
    func shutdown(byClient: Bool = true) {
        state.withLock { s in
            if byClient { s.closedByClient = true }
            if s.fdOpen { Socket.shutdownBoth(fd) }
        }
    }

    private func readLoop(decoder start: FrameDecoder) {
        var decoder = start
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var reason = BreakwaterError(.connectionLost, "daemon closed the connection")
        /// The socket ended (EOF or reset) rather than the daemon saying why: it stopped or restarted.
        var ended = true
        loop: while true {
            do {
                while let frame = try decoder.next() {
                    if let stop = dispatch(frame) {
                        reason = stop
                        ended = false
                        break loop
                    }
                }
                let n = try Socket.read(fd, into: &buffer)
                if n == 0 { break }
                decoder.feed(buffer[0..<n])
            } catch let e as WireError {
                reason = BreakwaterError(.protocolViolation, e.description)
                ended = false
                break
            } catch {
                reason = BreakwaterError(.connectionLost, "connection to the daemon broke")
                break
            }
        }
        let (calls, byClient) = state.withLock { s in
            s.closed = true
            defer { s.sinks.removeAll() }
            return (s.sinks, s.closedByClient)
        }
        if byClient { ended = false }
        for call in calls.values {
            if ended, startedNotices, !call.started {
                call.sink(.failed(BreakwaterError(.notStarted, "the daemon went away before the call reached a provider")))
            } else if ended, startedNotices {
                call.sink(.failed(BreakwaterError(.daemonRestarted, "the daemon stopped or restarted while the call "
                    + "was in flight upstream; it may have reached the provider, so it was not sent again")))
            } else {
                call.sink(.failed(reason))
            }
        }
        writeLock.withLock { _ in
            state.withLock { s in
                s.fdOpen = false
                Socket.closeFD(fd)
            }
        }
    }

    /// Routes one frame; returns an error when the connection must end.
    private func dispatch(_ frame: Frame) -> BreakwaterError? {
        do {
            switch frame.type {
            case .response:
                deliver(frame.streamID, .response(try CallResponse(frame: frame)), final: false)
            case .data:
                deliver(frame.streamID, .data(frame.payload), final: false)
            case .trailers:
                deliver(frame.streamID, .trailers(try CallTrailers(frame: frame)), final: true)
            case .error:
                let m = try ErrorMessage(frame: frame)
                if frame.streamID == 0 { return BreakwaterError(m, connection: true) }
                deliver(frame.streamID, .failed(BreakwaterError(m, connection: false)), final: true)
            case .goAway:
                let g = try GoAway(frame: frame)
                // Calls above lastStreamID were never started: tell them so they can be sent again.
                let refused = state.withLock { s in
                    s.draining = true
                    let ids = s.sinks.keys.filter { $0 > g.lastStreamID }
                    return ids.compactMap { s.sinks.removeValue(forKey: $0)?.sink }
                }
                for sink in refused {
                    sink(.failed(BreakwaterError(.notStarted, code: .notAccepted, "daemon is draining; call not started")))
                }
            case .ping:
                try send([frame.pong()])
            case .notice:
                deliver(frame.streamID, .notice(try CallNotice(frame: frame)), final: false)
            case .started:
                state.withLock { s in s.sinks[frame.streamID]?.started = true }
            case .pong, .hello, .request, .cancel, .admin:
                break
            }
        } catch let e as BreakwaterError {
            return e
        } catch {
            return BreakwaterError(.protocolViolation, "\(error)")
        }
        return nil
    }

    private func deliver(_ id: StreamID, _ event: CallEvent, final: Bool) {
        let call = state.withLock { s in final ? s.sinks.removeValue(forKey: id) : s.sinks[id] }
        call?.sink(event)
    }
}
