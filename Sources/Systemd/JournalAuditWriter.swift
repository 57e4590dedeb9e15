import Dispatch
import PosixThread
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Writes audit events to the systemd journal, off the caller's thread, and counts everything it could not write.
///
/// `record(_:)` only appends to a bounded in-memory queue (a lock held for the length of an append), so the
/// daemon's event loop never waits on journald. One thread drains the queue into journald's socket
/// (`JournalEntryEncoder`: a connected datagram socket, journald's native protocol); when journald is slow that
/// thread blocks, the queue fills, and what no longer fits is dropped and counted. Entries journald did not take
/// are counted as unwritten: the socket is missing, nobody listens on it, or a send failed. Both counts appear in
/// `statistics` for the daemon's status, and once something was lost the writer adds an `auditLoss` entry
/// (priority `err`, at most one a second, also when no further events come) as soon as journald's socket is back.
public final class JournalAuditWriter: Sendable {
    /// How the writer is set up.
    public struct Configuration: Sendable {
        /// Events the queue holds before new ones are dropped (and counted).
        public var queueCapacity: Int
        /// `SYSLOG_IDENTIFIER` of every entry.
        public var syslogIdentifier: String
        /// journald's socket, which the writer connects to.
        public var socketPath: String
        /// Woken by the first event after it went idle, the writer waits this long before taking the queue, so the
        /// events that follow go in the same batch instead of waking it each (one wake-up per window at most, not
        /// one per event). Zero: take each event as it comes.
        public var batchWindow: Duration

        /// The defaults: 16,384 queued events, `breakwaterd`, `/run/systemd/journal/socket`, a 5 ms batch window.
        public init(queueCapacity: Int = 16_384, syslogIdentifier: String = "breakwaterd",
                    socketPath: String = "/run/systemd/journal/socket", batchWindow: Duration = .milliseconds(5)) {
            precondition(queueCapacity > 0, "the audit queue needs room for at least one event")
            self.batchWindow = batchWindow
            self.queueCapacity = queueCapacity
            self.syslogIdentifier = syslogIdentifier
            self.socketPath = socketPath
        }
    }

    /// What the writer has done since it started.
    public struct Statistics: Sendable, Equatable, CustomStringConvertible {
        /// Entries journald took.
        public var written: Int
        /// Entries sent but not taken: the journal socket was missing or refused them, or a send failed.
        public var unwritten: Int
        /// Entries dropped before sending because the queue was full (or the writer was shut down).
        public var dropped: Int
        /// Entries waiting in the queue or being sent now.
        public var pending: Int
        /// The errno of the most recent failed send, 0 if none failed.
        public var lastErrorNumber: Int32

        /// Counts as given.
        public init(written: Int, unwritten: Int, dropped: Int, pending: Int, lastErrorNumber: Int32) {
            self.written = written
            self.unwritten = unwritten
            self.dropped = dropped
            self.pending = pending
            self.lastErrorNumber = lastErrorNumber
        }

        /// Every entry that was recorded but is not in the journal and never will be.
        public var lost: Int { unwritten + dropped }

        /// `audit: written 10, unwritten 0, dropped 0, pending 0`, for a STATUS= line.
        public var description: String {
            "audit: written \(written), unwritten \(unwritten), dropped \(dropped), pending \(pending)"
        }
    }

    private let core: Core

    /// Starts the writer thread. Throws `JournalWriterError` if the thread cannot be created.
    public init(configuration: Configuration = Configuration()) throws(JournalWriterError) {
        core = Core(configuration: configuration)
        let core = self.core
        do {
            try PosixThread.detached { core.drain() }
        } catch {
            throw JournalWriterError(description: "could not start the audit writer thread (error \(error.code))")
        }
    }

    deinit {
        core.close()
    }

    /// Queues `event` for the journal and returns at once. If the queue is full the event is dropped and
    /// counted in `droppedCount`; nothing is lost without being counted.
    public func record(_ event: AuditEvent) {
        core.record(event)
    }

    /// Entries journald did not take: its socket was missing or refused them, or a send failed.
    public var unwrittenCount: Int { core.unwritten.load(ordering: .relaxed) }

    /// Entries dropped because the queue was full.
    public var droppedCount: Int { core.dropped.load(ordering: .relaxed) }

    /// Entries journald took.
    public var writtenCount: Int { core.written.load(ordering: .relaxed) }

    /// All the counts at once.
    public var statistics: Statistics { core.statistics }

    /// How many batches the writer thread has taken off the queue (each one wake-up of it): with the batch window,
    /// a burst of events is one batch, not one each.
    public var batchesTaken: Int { core.batches.load(ordering: .relaxed) }

    /// Whether the writer thread is asleep waiting for events (the next one wakes it, and the batch window starts).
    public var isWaitingForEvents: Bool { core.isWaiting }

    /// Waits until every event recorded before the call has been sent (or counted as not written), at most
    /// `timeout`. Returns whether it got there. For tests and for shutdown; never call it on an event loop.
    @discardableResult
    public func flush(timeout: Duration = .seconds(5)) -> Bool {
        core.waitUntilIdle(timeout: timeout)
    }

    /// Stops taking events, sends what is queued (waiting at most `timeout`) and lets the thread end. Events
    /// recorded afterwards are counted as dropped. Returns whether the queue was empty in time.
    @discardableResult
    public func shutdown(timeout: Duration = .seconds(5)) -> Bool {
        core.close()
        return core.waitUntilIdle(timeout: timeout)
    }
}

/// Raised when the writer cannot start.
public struct JournalWriterError: Error, CustomStringConvertible {
    /// What went wrong.
    public let description: String
}

extension JournalAuditWriter {
    /// The queue, the counters and the drain loop; shared by the writer and its thread, so that releasing the
    /// writer lets the thread finish the queue and end.
    final class Core: Sendable {
        private struct Queue {
            var events: [AuditEvent] = []
            var sending = 0
            var drainerWaiting = false
            var closed = false
        }

        let configuration: JournalAuditWriter.Configuration
        private let queue = Mutex(Queue())
        private let wakeup = DispatchSemaphore(value: 0)
        let written = Atomic<Int>(0)
        let unwritten = Atomic<Int>(0)
        let dropped = Atomic<Int>(0)
        let lastErrorNumber = Atomic<Int32>(0)
        let batches = Atomic<Int>(0)

        init(configuration: JournalAuditWriter.Configuration) {
            self.configuration = configuration
        }

        func record(_ event: AuditEvent) {
            let wake = queue.withLock { q -> Bool? in
                guard !q.closed, q.events.count < configuration.queueCapacity else { return nil }
                q.events.append(event)
                guard q.drainerWaiting else { return false }
                q.drainerWaiting = false
                return true
            }
            switch wake {
            case nil: dropped.add(1, ordering: .relaxed)
            case true?: wakeup.signal()
            case false?: break
            }
        }

        func close() {
            let wake = queue.withLock { q -> Bool in
                q.closed = true
                defer { q.drainerWaiting = false }
                return q.drainerWaiting
            }
            if wake { wakeup.signal() }
        }

        var isWaiting: Bool { queue.withLock { $0.drainerWaiting } }

        var statistics: JournalAuditWriter.Statistics {
            let pending = queue.withLock { $0.events.count + $0.sending }
            return Statistics(
                written: written.load(ordering: .relaxed), unwritten: unwritten.load(ordering: .relaxed),
                dropped: dropped.load(ordering: .relaxed), pending: pending,
                lastErrorNumber: lastErrorNumber.load(ordering: .relaxed)
            )
        }

        func waitUntilIdle(timeout: Duration) -> Bool {
            let clock = ContinuousClock()
            let deadline = clock.now + timeout
            while true {
                let idle = queue.withLock { $0.events.isEmpty && $0.sending == 0 }
                if idle { return true }
                if clock.now >= deadline { return false }
                usleep(1_000)
            }
        }

        /// The writer thread's loop: take everything queued, send it, repeat; sleep while there is nothing.
        func drain() {
            var encoder = JournalEntryEncoder(syslogIdentifier: configuration.syslogIdentifier,
                                              socketPath: configuration.socketPath)
            defer { encoder.closeSocket() }
            var batch: [AuditEvent] = []
            var loss = LossReporter()
            while true {
                enum Next { case send, wait, stop }
                let next = queue.withLock { q -> Next in
                    if q.events.isEmpty {
                        if q.closed { return .stop }
                        q.drainerWaiting = true
                        return .wait
                    }
                    swap(&batch, &q.events)
                    q.sending = batch.count
                    batches.add(1, ordering: .relaxed)
                    return .send
                }
                switch next {
                case .stop:
                    loss.reportIfDue(self, encoder: &encoder, force: true)
                    return
                case .wait:
                    // With a loss not yet in the journal, wake up in time to report it even if nothing comes.
                    if loss.isPending(self) {
                        if wakeup.wait(timeout: .now() + .seconds(1)) == .timedOut {
                            queue.withLock { $0.drainerWaiting = false }
                            loss.reportIfDue(self, encoder: &encoder)
                        }
                    } else {
                        wakeup.wait()
                    }
                    // Let the events that follow this one arrive, and take them together.
                    let window = configuration.batchWindow
                    if window > .zero {
                        let (seconds, attoseconds) = window.components
                        usleep(useconds_t(clamping: seconds * 1_000_000 + attoseconds / 1_000_000_000_000))
                    }
                    continue
                case .send:
                    break
                }

                encoder.beginBatch()
                for event in batch {
                    let result = encoder.send(event)
                    if result < 0 {
                        unwritten.add(1, ordering: .relaxed)
                        lastErrorNumber.store(-result, ordering: .relaxed)
                    } else {
                        written.add(1, ordering: .relaxed)
                    }
                }
                batch.removeAll(keepingCapacity: true)
                loss.reportIfDue(self, encoder: &encoder)
                queue.withLock { $0.sending = 0 }
            }
        }

        /// Writes an `auditLoss` entry when entries were dropped or unwritten since the last one: at most once a
        /// second, until journald takes it (a report journald did not take is not itself counted).
        private struct LossReporter {
            private var reported = 0
            private var lastReport: ContinuousClock.Instant?

            func isPending(_ core: Core) -> Bool { core.lost > reported }

            mutating func reportIfDue(_ core: Core, encoder: inout JournalEntryEncoder, force: Bool = false) {
                let lost = core.lost
                guard lost > reported else { return }
                if !force, let lastReport, ContinuousClock.now - lastReport < .seconds(1) { return }
                lastReport = ContinuousClock.now
                encoder.beginBatch()
                var report = AuditEvent(.auditLoss)
                report.set(.droppedCount, core.dropped.load(ordering: .relaxed))
                report.set(.unwrittenCount, core.unwritten.load(ordering: .relaxed))
                if encoder.send(report) >= 0 { reported = lost }
            }
        }

        private var lost: Int { dropped.load(ordering: .relaxed) + unwritten.load(ordering: .relaxed) }
    }
}

