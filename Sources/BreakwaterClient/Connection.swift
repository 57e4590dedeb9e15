import BreakwaterWire
import PosixThread
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

/// One connection to the daemon: HELLO done at creation, a reader thread that routes frames to calls by stream id,
/// and a writer thread for the writes that have to wait for the socket.
///
/// Calls register a sink before their REQUEST is queued, so no answer can arrive for an unknown call. When the
/// connection breaks, every open call fails and the client makes a new connection for the next call: with
/// `.notStarted` when the daemon never said STARTED for it, or never got all of its REQUEST (it may be sent again),
/// else `.daemonRestarted`.
///
/// No caller ever waits on the socket here: `open`, `send` and `cancel` append frames to a queue under the state
/// lock and wake the writer thread, which alone blocks in send(2) — or, when nothing is queued, write a small entry
/// themselves with a send that never waits, queueing what the socket did not take. A daemon that stops reading
/// therefore stalls only the writer thread, never a thread of the app's cooperative pool, and what may wait in
/// the queue is bounded (`maxQueuedBytes`).
final class Connection: Sendable {
    typealias Sink = @Sendable (CallEvent) -> Void

    /// How many bytes may wait to be written before `open` refuses new calls with `.sendQueueFull`: 4 MiB, four
    /// 1 MiB bodies. A call is always taken when nothing waits, so any body up to the daemon's `maxBody` can be
    /// sent; the queue thus holds at most max(4 MiB, one call) plus the small control frames (CANCEL, PONG), which
    /// are never refused. A daemon that reads at all drains the queue; one that never does cannot make the app's
    /// memory grow without bound.
    static let maxQueuedBytes = 4 << 20
    /// Frames up to this size are written by the caller itself when nothing is queued or being written, with a
    /// send(2) that never waits (`MSG_DONTWAIT`): the usual call then costs no wake-up of the writer thread. What
    /// the socket does not take at once goes to the writer. Larger entries always go to the writer, which also
    /// encodes them, so no caller copies a large body under the state lock.
    static let directWriteLimit = 64 << 10
    /// Flow control (PROTOCOL.md): each call starts with this much credit for the daemon's DATA, and the shim gives
    /// it back (WINDOW_UPDATE) as the app consumes — for a stream, as the app takes each chunk; for a whole answer,
    /// as it arrives. So a stream the app does not read holds at most this (plus one chunk) here, and the daemon
    /// stops reading the provider for it. HTTP/2's default window; far above what an LLM stream has in flight.
    static let streamWindow: UInt32 = 64 << 10

    private struct OpenCall {
        var sink: Sink
        /// The daemon said STARTED: the call's first upstream request may have gone out.
        var started = false
        /// All of the call's REQUEST and body frames were written to the socket. A call that was not cannot have
        /// started, whatever else the daemon said: it fails with `.notStarted` when the connection breaks.
        var flushed = false
        /// Credit is given back as DATA arrives (a whole answer, gathered at once), not as the app takes it.
        var grantsOnDelivery: Bool
        /// Bytes of DATA consumed and not yet given back as credit.
        var consumed = 0
    }

    /// Frames waiting to be written; `call` is set when they are a call's REQUEST and body.
    private struct Outgoing {
        var frames: [Frame]
        /// Set once encoded: the bytes, of which the first `written` have been sent.
        var encoded: [UInt8]?
        var written = 0
        var call: StreamID?
        /// Bytes still to write.
        let size: Int

        init(frames: [Frame], call: StreamID?) {
            self.frames = frames
            self.call = call
            self.size = frames.reduce(0) { $0 + FrameHeader.size + $1.payload.count }
        }

        init(rest encoded: [UInt8], written: Int, call: StreamID?) {
            self.frames = []
            self.encoded = encoded
            self.written = written
            self.call = call
            self.size = encoded.count - written
        }

        func encode() -> [UInt8] {
            if let encoded { return encoded }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(size)
            for f in frames { f.encode(into: &bytes) }
            return bytes
        }
    }

    private struct State {
        var nextStreamID: StreamID = 1
        var sinks: [StreamID: OpenCall] = [:]
        /// The reader has ended: no more calls, no more writes.
        var closed = false
        /// Set by GOAWAY: no new calls here.
        var draining = false
        /// A write failed; the socket is shut down and nothing more is written.
        var writeFailed = false
        /// The socket is open. It is closed only by the reader, after the writer thread has ended and under this
        /// lock; every other write (the direct ones) and shutdown happens under this lock while it is set, so none
        /// can reach an fd number the process has since given to another file.
        var fdOpen = true
        /// This side ended the connection (`BreakwaterClient.close()`): its calls fail with `.connectionLost`
        /// rather than being sent again.
        var closedByClient = false
        /// Frames not yet taken by the writer, in the order they must reach the daemon. Queueing a call's frames
        /// in the same critical section that allocates its stream id keeps ids increasing on the wire.
        var outbox: [Outgoing] = []
        /// The writer thread is writing an entry it took off `outbox`.
        var writing = false
        /// Bytes in `outbox` plus those of the entry being written.
        var queuedBytes = 0

        var acceptsCalls: Bool { !closed && !writeFailed && !draining && nextStreamID < 0x7FFF_FFFF }
        var acceptsWrites: Bool { !closed && !writeFailed }

        /// Writes `entry` at once when it is small and nothing is ahead of it (a send that never waits), else
        /// queues it, or what the socket did not take of it, for the writer. Returns whether the writer must be
        /// woken. The caller has checked `acceptsWrites`.
        mutating func submit(_ entry: Outgoing, fd: Int32) -> Bool {
            guard outbox.isEmpty, !writing, entry.size <= Connection.directWriteLimit else {
                outbox.append(entry)
                queuedBytes += entry.size
                return true
            }
            let bytes = entry.encode()
            let written: Int
            do throws(Socket.Failure) {
                written = try Socket.writeAvailable(fd, bytes)
            } catch {
                failWrites(fd: fd)
                return true
            }
            if written == bytes.count {
                if let id = entry.call { sinks[id]?.flushed = true }
                return false
            }
            let rest = Outgoing(rest: bytes, written: written, call: entry.call)
            outbox.append(rest)
            queuedBytes += rest.size
            return true
        }

        /// Queues frames that are not a call's REQUEST (CANCEL, PONG); false once writing has ended.
        mutating func send(_ frames: [Frame], fd: Int32) -> Bool {
            guard acceptsWrites else { return false }
            return submit(Outgoing(frames: frames, call: nil), fd: fd)
        }

        /// A write failed: the daemon is gone (or the app closed the connection). Shuts the socket down so the
        /// reader sees it end and fails the open calls, those whose REQUEST was not all written with `.notStarted`.
        mutating func failWrites(fd: Int32) {
            writeFailed = true
            outbox.removeAll()
            queuedBytes = 0
            if fdOpen { Socket.shutdownBoth(fd) }
        }

        /// Takes off the queue the entries of calls `drop` selects that nothing has been written of yet.
        mutating func unqueue(where drop: (StreamID) -> Bool) {
            let unsent = { (e: Outgoing) in e.written == 0 && e.call.map(drop) == true }
            queuedBytes -= outbox.filter(unsent).reduce(0) { $0 + $1.size }
            outbox.removeAll(where: unsent)
        }
    }

    let fd: Int32
    let serverLimits: Limits
    /// The daemon agreed to send STARTED before each call's first upstream request.
    let startedNotices: Bool
    /// The daemon agreed to flow control: credit goes back to it as the app consumes.
    let flowControl: Bool
    private let state = Mutex(State())
    /// Wakes the writer when the outbox gets frames or the connection closes.
    private let wakeWriter = WakeSignal()

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
            self.flowControl = serverHello.streamWindow != nil
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
        Socket.spawnThread { [self] in
            // The reader owns the writer: it joins it before closing the fd.
            let writer = Socket.spawnJoinableThread { [self] in self.writeLoop() }
            self.readLoop(decoder: leftover, writer: writer)
        }
    }

    var isUsable: Bool { state.withLock { $0.acceptsCalls } }

    /// Registers a call and sends the frames `makeFrames` builds for its stream id; returns the id, or nil when
    /// this connection takes no new calls. Never waits for the socket: what is not written at once (see
    /// `directWriteLimit`) the writer thread writes, and if that fails, the call fails through `sink`
    /// (`.notStarted` when its REQUEST was not all written). Id allocation and queueing happen under one lock, so
    /// ids reach the daemon in increasing order.
    ///
    /// Throws `.sendQueueFull` when more than `maxQueuedBytes` already wait to be written (the daemon is not
    /// reading); the call is then not registered and nothing of it is sent.
    /// `grantsOnDelivery`: credit goes back as DATA arrives (the caller gathers the whole answer); otherwise the
    /// caller reports what the app consumed with `consumed(_:bytes:)`.
    func open(grantsOnDelivery: Bool, sink: @escaping Sink, makeFrames: (StreamID) -> [Frame])
        throws(BreakwaterError) -> StreamID? {
        let opened = state.withLock { s -> Result<(StreamID, wake: Bool)?, BreakwaterError> in
            guard s.acceptsCalls else { return .success(nil) }
            let id = s.nextStreamID
            let entry = Outgoing(frames: makeFrames(id), call: id)
            guard s.queuedBytes == 0 || s.queuedBytes + entry.size <= Self.maxQueuedBytes else {
                return .failure(BreakwaterError(.sendQueueFull, "the daemon is not reading: \(s.queuedBytes) bytes "
                    + "already wait to be written on this connection (limit \(Self.maxQueuedBytes)); call not sent"))
            }
            s.nextStreamID += 2
            s.sinks[id] = OpenCall(sink: sink, grantsOnDelivery: grantsOnDelivery)
            return .success((id, s.submit(entry, fd: fd)))
        }
        guard let (id, wake) = try opened.get() else { return nil }
        if wake { wakeWriter.signal() }
        return id
    }

    /// Abandons a call: forgets it and tells the daemon with CANCEL — or, when nothing of it has been written yet,
    /// takes it off the queue instead, so the daemon never hears of it (a skipped stream id is allowed).
    func cancel(_ id: StreamID) {
        let wake = state.withLock { s -> Bool in
            s.sinks.removeValue(forKey: id)
            let queued = s.outbox.count
            s.unqueue { $0 == id }
            if s.outbox.count < queued { return false }
            return s.send([.cancel(streamID: id)], fd: fd)
        }
        if wake { wakeWriter.signal() }
    }

    /// The app consumed `bytes` of a call's DATA: once half a window's worth has gathered, it goes back to the
    /// daemon as credit (WINDOW_UPDATE), so the daemon never waits on a reader that keeps up.
    func consumed(_ id: StreamID, bytes: Int) {
        guard flowControl, bytes > 0 else { return }
        let wake = state.withLock { s in Self.consume(&s, id, bytes: bytes, fd: fd) }
        if wake { wakeWriter.signal() }
    }

    /// Under the lock: counts consumed bytes and queues a WINDOW_UPDATE when enough gathered. Returns whether the
    /// writer must be woken.
    private static func consume(_ s: inout State, _ id: StreamID, bytes: Int, fd: Int32) -> Bool {
        guard var call = s.sinks[id] else { return false }  // the call ended: no credit is owed
        call.consumed += bytes
        guard call.consumed >= Int(streamWindow / 2) else {
            s.sinks[id] = call
            return false
        }
        let increment = UInt32(clamping: call.consumed)
        call.consumed = 0
        s.sinks[id] = call
        return s.send([WindowUpdate(increment: increment).frame(streamID: id)], fd: fd)
    }

    /// Sends connection or call frames (PONG, CANCEL) without waiting; dropped when the connection has ended.
    func send(_ frames: [Frame]) {
        if state.withLock({ $0.send(frames, fd: fd) }) { wakeWriter.signal() }
    }

    /// Ends the connection for the app (`BreakwaterClient.close()`): the reader sees EOF and fails the calls still
    /// open with `.connectionLost`, so none is sent again. (A failed write ends it with `State.failWrites`.)
    func shutdown() {
        state.withLock { s in
            s.closedByClient = true
            if s.fdOpen { Socket.shutdownBoth(fd) }
        }
    }

    /// The writer thread: writes the outbox in order, one entry at a time, until the connection closes or a write
    /// fails. It is the only code that waits on the socket for writing.
    private func writeLoop() {
        while true {
            enum Step { case write(Outgoing), idle, stop }
            let step = state.withLock { s -> Step in
                if !s.acceptsWrites { return .stop }
                guard !s.outbox.isEmpty else { return .idle }
                s.writing = true
                // removeFirst is O(n), but the outbox is short: at most a few calls (maxQueuedBytes) and the
                // control frames queued behind them.
                return .write(s.outbox.removeFirst())
            }
            switch step {
            case .stop:
                return
            case .idle:
                wakeWriter.wait()
            case .write(let entry):
                // Outside the lock: this may wait for as long as the daemon does not read. The fd stays open
                // meanwhile: the reader closes it only after this thread has ended.
                let bytes = entry.encode()
                do throws(Socket.Failure) {
                    try Socket.writeAll(fd, bytes, from: entry.written)
                } catch {
                    state.withLock { s in
                        s.writing = false
                        s.failWrites(fd: fd)
                    }
                    return
                }
                state.withLock { s in
                    s.writing = false
                    s.queuedBytes -= entry.size
                    if let id = entry.call { s.sinks[id]?.flushed = true }
                }
            }
        }
    }

    private func readLoop(decoder start: FrameDecoder, writer: PosixThread) {
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
        // Stop the writer before the fd goes: no new writes, shut the socket down (which ends a send(2) blocked on
        // a daemon that does not read), wake it, and wait for it to end.
        state.withLock { s in
            s.closed = true
            Socket.shutdownBoth(fd)
        }
        wakeWriter.signal()
        writer.join()
        let (calls, byClient) = state.withLock { s in
            s.fdOpen = false
            Socket.closeFD(fd)
            s.outbox.removeAll()
            s.queuedBytes = 0
            defer { s.sinks.removeAll() }
            return (s.sinks, s.closedByClient)
        }
        if byClient {
            ended = false
            reason = BreakwaterError(.connectionLost, "the client closed the connection")
        }
        for call in calls.values {
            if !byClient, !call.flushed {
                // Its REQUEST never all reached the daemon, so the daemon cannot have started it: safe to send again.
                call.sink(.failed(BreakwaterError(.notStarted, "the connection to the daemon ended before the call "
                    + "was written to it")))
            } else if ended, startedNotices, !call.started {
                call.sink(.failed(BreakwaterError(.notStarted, "the daemon went away before the call reached a provider")))
            } else if ended, startedNotices {
                call.sink(.failed(BreakwaterError(.daemonRestarted, "the daemon stopped or restarted while the call "
                    + "was in flight upstream; it may have reached the provider, so it was not sent again")))
            } else {
                call.sink(.failed(reason))
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
                    // Those still queued need not be written at all.
                    s.unqueue { $0 > g.lastStreamID }
                    return ids.compactMap { s.sinks.removeValue(forKey: $0)?.sink }
                }
                for sink in refused {
                    sink(.failed(BreakwaterError(.notStarted, code: .notAccepted, "daemon is draining; call not started")))
                }
            case .ping:
                send([frame.pong()])
            case .notice:
                deliver(frame.streamID, .notice(try CallNotice(frame: frame)), final: false)
            case .started:
                state.withLock { s in s.sinks[frame.streamID]?.started = true }
            case .pong, .hello, .request, .cancel, .admin, .windowUpdate, .authorize:
                break
            }
        } catch {
            return BreakwaterError(.protocolViolation, error.description)
        }
        return nil
    }

    private func deliver(_ id: StreamID, _ event: CallEvent, final: Bool) {
        var wake = false
        let call = state.withLock { s -> OpenCall? in
            if final { return s.sinks.removeValue(forKey: id) }
            guard let call = s.sinks[id] else { return nil }
            if flowControl, call.grantsOnDelivery, case .data(let d) = event {
                wake = Self.consume(&s, id, bytes: d.count, fd: fd)
            }
            return call
        }
        if wake { wakeWriter.signal() }
        call?.sink(event)
    }
}

/// Wakes a waiting thread: a sticky flag under a pthread mutex and condition variable (the shim has no Dispatch,
/// and `Mutex` has no condition). A signal given while nobody waits is kept, so none is lost between the writer
/// finding the outbox empty and starting to wait. The pthread objects live on the heap: they must not move.
final class WakeSignal: @unchecked Sendable {
    // Unchecked: `signalled` is only touched with `mutex` held.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var signalled = false

    init() {
        mutex.initialize(to: pthread_mutex_t())
        condition.initialize(to: pthread_cond_t())
        precondition(pthread_mutex_init(mutex, nil) == 0 && pthread_cond_init(condition, nil) == 0)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func signal() {
        pthread_mutex_lock(mutex)
        signalled = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Returns once `signal()` has been called since the last `wait()` returned.
    func wait() {
        pthread_mutex_lock(mutex)
        while !signalled { pthread_cond_wait(condition, mutex) }
        signalled = false
        pthread_mutex_unlock(mutex)
    }
}
