import Foundation
import JournalTestKit
import Systemd
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The audit writer against a real systemd-journald: each test starts its own in a private mount namespace
/// (JournalHarness), writes through the real writer, and reads the entries back with `journalctl -o json`.
@Suite(.timeLimit(.minutes(2))) struct JournalAuditWriterTests {
    /// A value no other test uses, to select this test's entries.
    static func unique(_ prefix: String) -> String { "\(prefix)-\(UUID().uuidString.prefix(8))" }

    /// A burst of events wakes the writer thread once and goes in one batch (the batch window), where it used to
    /// wake it per event; with no window every event can be its own batch. No journald needed: the socket is absent,
    /// so the entries are counted unwritten, batch by batch all the same.
    @Test func aBurstIsOneBatch() throws {
        let writer = try JournalAuditWriter(configuration: .init(socketPath: "/nonexistent/journal.sock",
                                                                 batchWindow: .milliseconds(200)))
        defer { _ = writer.shutdown(timeout: .seconds(5)) }
        // The window starts when an event wakes the idle writer: wait until it is asleep (bounded).
        let deadline = ContinuousClock.now + .seconds(5)
        while !writer.isWaitingForEvents, ContinuousClock.now < deadline { usleep(1_000) }
        #expect(writer.isWaitingForEvents)
        let before = writer.batchesTaken
        for i in 0..<500 { writer.record(AuditEvent(.callCompleted, requestID: "burst-\(i)")) }
        #expect(writer.flush(timeout: .seconds(5)))
        #expect(writer.statistics.unwritten == 500)
        let batches = writer.batchesTaken - before
        #expect(batches <= 2, "500 events in \(batches) batches")
        print("audit writer: 500 events in a burst, \(batches) batch(es) with a 200 ms window")
    }

    @Test func everyKindLandsWithItsMessageIDFieldsAndPriority() async throws {
        try await JournalHarness.withHarness { journal in
            let writer = try journal.run { try JournalAuditWriter() }
            let requestID = Self.unique("kinds")
            let events = AuditEventSamples.all(requestID: requestID)
            for event in events { writer.record(event) }
            #expect(writer.flush())

            let entries = try await journal.waitForEntries(count: events.count, matching: ["SYSLOG_IDENTIFIER":
                "breakwaterd"])
            #expect(entries.count == events.count)
            #expect(writer.statistics == .init(written: events.count, unwritten: 0, dropped: 0, pending: 0,
                                               lastErrorNumber: 0))
            for event in events {
                let matching = entries.filter { $0.messageID == event.kind.messageID }
                #expect(matching.count == 1, "\(event.kind)")
                guard let entry = matching.first else { continue }
                #expect(entry.priority == event.priority.rawValue, "\(event.kind)")
                #expect(entry.message == event.summary)
                #expect(entry["AUDIT_KIND"] == event.kind.rawValue)
                #expect(entry["SYSLOG_IDENTIFIER"] == "breakwaterd")
                for field in event.fields {
                    #expect(entry.values(field.field.name) == [field.value], "\(event.kind) \(field.field)")
                }
                // Nothing but what the writer sends: its five fields and the event's own.
                let sent = Set(["MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "AUDIT_KIND"]
                    + event.fields.map(\.field.name))
                #expect(Set(entry.userFieldNames) == sent, "\(event.kind)")
            }
            // The priorities the issue asks for, as journald stored them.
            let priority = Dictionary(entries.map { ($0["AUDIT_KIND"] ?? "", $0.priority ?? -1) }) { a, _ in a }
            #expect(priority["breaker_transition"] == 4)
            #expect(priority["failure_rate_alert"] == 4)
            #expect(priority["identity_check"] == 5)
            #expect(priority["budget_refused"] == 5)
            #expect(priority["policy_decision"] == 6)
            #expect(priority["audit_loss"] == 3)
            #expect(try journal.count(matching: ["PRIORITY": "4", "REQUEST_ID": requestID]) == 2)
            #expect(try journal.count(matching: ["DECISION": "deny", "REQUEST_ID": requestID]) == 9)  // with action_denied, tool_call_blocked
        }
    }

    @Test func valuesThatLookLikeFieldsStayInTheirField() async throws {
        try await JournalHarness.withHarness { journal in
            let writer = try journal.run { try JournalAuditWriter() }
            var event = AuditEvent(.policyDecision, requestID: Self.unique("forge"))
            event.decision = .deny
            event.reason = "x\nPRIORITY=0\nMESSAGE_ID=00000000000000000000000000000000\nDECISION=allow"
            writer.record(event)
            #expect(writer.flush())
            let entries = try await journal.waitForEntries(count: 1, matching: ["REQUEST_ID": event.requestID!])
            #expect(entries.count == 1)
            #expect(entries.first?.values("PRIORITY") == ["5"])
            #expect(entries.first?.values("DECISION") == ["deny"])
            #expect(entries.first?.values("MESSAGE_ID") == [AuditEventKind.policyDecision.messageID])
            #expect(entries.first?["REASON"] == event.reason)
            #expect(try journal.count(matching: ["MESSAGE_ID": "00000000000000000000000000000000"]) == 0)
        }
    }

    @Test func aBurstOfNEventsIsExactlyNEntries() async throws {
        try await JournalHarness.withHarness { journal in
            let writer = try journal.run { try JournalAuditWriter() }
            let rule = Self.unique("burst")
            let n = 5_000
            for i in 0..<n {
                var event = AuditEvent(.upstreamAttempt, requestID: "b-\(i)")
                event.rule = rule
                event.attempt = 1
                event.provider = "openai"
                writer.record(event)
            }
            #expect(writer.flush(timeout: .seconds(30)))
            let stats = writer.statistics
            #expect(stats.written == n && stats.unwritten == 0 && stats.dropped == 0, "\(stats)")
            _ = try await journal.waitForEntries(count: n, matching: ["RULE": rule], timeout: .seconds(30))
            #expect(try journal.count(matching: ["RULE": rule]) == n)
            #expect(try journal.count(matching: ["RULE": rule, "REQUEST_ID": "b-4321"]) == 1)
            #expect(try journal.count(matching: ["MESSAGE_ID": AuditEventKind.auditLoss.messageID]) == 0)
        }
    }

    /// With no socket at the path, every entry is counted unwritten, with ENOENT (nothing vanishes as a success).
    @Test func entriesSentWithTheSocketMissingAreCountedUnwritten() throws {
        let empty = try JournalHarness.start(.init(listener: .missingSocket))
        defer { empty.stop() }
        let writer = try empty.run { try JournalAuditWriter() }
        for event in AuditEventSamples.all() { writer.record(event) }
        #expect(writer.flush())
        #expect(writer.unwrittenCount == AuditEventKind.allCases.count)
        #expect(writer.writtenCount == 0)
        #expect(writer.statistics.lastErrorNumber == ENOENT)
    }

    @Test func entriesRefusedByAStaleSocketAreCountedUnwritten() throws {
        let stale = try JournalHarness.start(.init(listener: .staleSocket))
        defer { stale.stop() }
        let writer = try stale.run { try JournalAuditWriter() }
        for event in AuditEventSamples.all() { writer.record(event) }
        #expect(writer.flush())
        #expect(writer.unwrittenCount == AuditEventKind.allCases.count)
        #expect(writer.writtenCount == 0)
        #expect(writer.statistics.lastErrorNumber == ECONNREFUSED)
    }

    /// The writer connects to journald's socket once and keeps it; when journald goes and a new one binds the path
    /// (a restart), the next entry finds the old peer gone, reconnects, and lands in the new one. The datagrams
    /// are journald's native format, one `NAME=value` line per field.
    @Test func aRestartedJournaldGetsTheNextEntry() throws {
        let path = "/tmp/bw-journal-\(UUID().uuidString.prefix(8)).sock"
        defer { unlink(path) }
        var first = try DatagramSocket(boundAt: path)
        let writer = try JournalAuditWriter(configuration: .init(socketPath: path, batchWindow: .zero))
        defer { _ = writer.shutdown() }
        writer.record(AuditEvent(.callCompleted, requestID: "before-restart"))
        let before = try #require(first.receive(timeout: .seconds(5)))
        first.close()
        unlink(path)
        var second = try DatagramSocket(boundAt: path)
        defer { second.close() }
        writer.record(AuditEvent(.callCompleted, requestID: "after-restart"))
        let after = try #require(second.receive(timeout: .seconds(5)))
        #expect(writer.flush())
        #expect(writer.writtenCount == 2 && writer.unwrittenCount == 0)
        for (datagram, id) in [(before, "before-restart"), (after, "after-restart")] {
            let lines = String(decoding: datagram, as: UTF8.self).split(separator: "\n")
            #expect(lines.contains("REQUEST_ID=\(id)"))
            #expect(lines.contains("AUDIT_KIND=call_completed"))
            #expect(lines.allSatisfy { line in
                line.firstIndex(of: "=").map { (try? AuditField.validate(String(line[..<$0]))) != nil } ?? false
            }, "not NAME=value lines: \(lines)")
        }
    }

    /// With journald frozen the writer thread blocks in sendmsg and the bounded queue overflows: every event is
    /// either in the journal or counted, and once journald runs again an audit_loss entry says how many went.
    @Test func aFullQueueDropsAndCountsAndReportsTheLoss() async throws {
        try await JournalHarness.withHarness { journal in
            let writer = try journal.run { try JournalAuditWriter(configuration: .init(queueCapacity: 64)) }
            let rule = Self.unique("overflow")
            let pid = try #require(journal.journaldPID)
            kill(pid, SIGSTOP)
            var recorded = 0
            let deadline = ContinuousClock.now + .seconds(20)
            while writer.droppedCount == 0, ContinuousClock.now < deadline {
                var event = AuditEvent(.retry, requestID: "o-\(recorded)")
                event.rule = rule
                writer.record(event)
                recorded += 1
                if recorded % 64 == 0 { usleep(200) }
            }
            let dropped = writer.droppedCount
            kill(pid, SIGCONT)
            #expect(dropped > 0, "the queue never filled")
            #expect(writer.flush(timeout: .seconds(30)))
            let stats = writer.statistics
            #expect(stats.written + stats.dropped == recorded && stats.unwritten == 0, "\(stats)")

            _ = try await journal.waitForEntries(count: stats.written, matching: ["RULE": rule],
                                                 timeout: .seconds(30))
            #expect(try journal.count(matching: ["RULE": rule]) == stats.written)
            let loss = try await journal.waitForEntries(count: 1, matching: ["MESSAGE_ID":
                AuditEventKind.auditLoss.messageID])
            #expect(loss.count == 1)
            #expect(loss.first?.priority == 3)
            #expect(loss.first?["DROPPED"] == String(stats.dropped))
            #expect(loss.first?["UNWRITTEN"] == "0")
        }
    }

    @Test func eventsRecordedAfterShutdownAreCountedDropped() throws {
        let empty = try JournalHarness.start(.init(listener: .missingSocket))
        defer { empty.stop() }
        let writer = try empty.run { try JournalAuditWriter() }
        #expect(writer.shutdown())
        writer.record(AuditEvent(.retry))
        #expect(writer.droppedCount == 1)
    }

    /// The private journald's socket queues as many datagrams as journald's socket on a systemd host (PID 1 sets
    /// net.unix.max_dgram_qlen to 512), not the kernel's 10: with journald stopped (SIGSTOP), 100 non-blocking sends
    /// all go in, where with 10 the 12th would fail with EAGAIN. Resumed, journald takes every one of them.
    @Test func theJournaldSocketQueuesLikeOnASystemdHost() async throws {
        try await JournalHarness.withHarness { journal in
            #expect(journal.datagramQueueLength == JournalHarness.systemdDatagramQueueLength)
            let pid = try #require(journal.journaldPID)
            let id = Self.unique("queue")
            #expect(kill(pid, SIGSTOP) == 0)
            var resumed = false
            defer { if !resumed { kill(pid, SIGCONT) } }
            let accepted = try journal.run { () throws -> Int in
                let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
                guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                defer { close(fd) }
                var sent = 0
                for i in 0..<100 {
                    let entry = Array("MESSAGE=queued \(i)\nBW_QUEUE_TEST=\(id)\n".utf8)
                    let n = DatagramSocket.withAddress("/run/systemd/journal/socket") {
                        sendto(fd, entry, entry.count, Int32(MSG_DONTWAIT), $0, $1)
                    }
                    guard n == entry.count else { break }
                    sent += 1
                }
                return sent
            }
            #expect(kill(pid, SIGCONT) == 0)
            resumed = true
            #expect(accepted == 100, "journald's socket took \(accepted) datagrams before EAGAIN")
            let entries = try await journal.waitForEntries(count: accepted, matching: ["BW_QUEUE_TEST": id])
            #expect(entries.count == accepted)
        }
    }

    /// The harness reaches child processes two ways: spawned from `run`, or wrapped with `command`.
    @Test func childProcessesLogIntoTheHarness() async throws {
        try await JournalHarness.withHarness { journal in
            let tag = Self.unique("child")
            let spawned = try journal.run {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-cat")
                process.arguments = ["-t", tag, "echo", "from run"]
                try process.run()
                return SendableProcess(process)
            }
            let (executable, arguments) = journal.command("/usr/bin/systemd-cat", ["-t", tag, "echo", "from nsenter"])
            let wrapped = Process()
            wrapped.executableURL = URL(fileURLWithPath: executable)
            wrapped.arguments = arguments
            try wrapped.run()
            spawned.process.waitUntilExit()
            wrapped.waitUntilExit()
            #expect(spawned.process.terminationStatus == 0 && wrapped.terminationStatus == 0)
            let entries = try await journal.waitForEntries(count: 2, matching: ["SYSLOG_IDENTIFIER": tag])
            #expect(Set(entries.compactMap(\.message)) == ["from run", "from nsenter"])
        }
    }

    /// Prints the rate the writer sustains into a real journald; a figure, not an assertion on speed.
    @Test func sustainedRate() async throws {
        try await JournalHarness.withHarness { journal in
            let writer = try journal.run { try JournalAuditWriter() }
            let rule = Self.unique("rate")
            let n = 20_000
            let clock = ContinuousClock()
            let start = clock.now
            for i in 0..<n {
                var event = AuditEventSamples.sample(.callCompleted, requestID: "s-\(i)")
                event.rule = rule
                while writer.statistics.pending > 8_000 { usleep(100) }
                writer.record(event)
            }
            #expect(writer.flush(timeout: .seconds(60)))
            let sent = clock.now - start
            // journald stores one socket's entries in order: once a last marker is readable, all before it are.
            var marker = AuditEvent(.retry, requestID: rule + "-end")
            marker.rule = rule + "-end"
            writer.record(marker)
            _ = try await journal.waitForEntries(count: 1, matching: ["REQUEST_ID": rule + "-end"],
                                                 timeout: .seconds(60), interval: .milliseconds(5))
            let stored = clock.now - start
            #expect(try journal.count(matching: ["RULE": rule]) == n)
            #expect(writer.unwrittenCount == 0 && writer.droppedCount == 0)
            func rate(_ d: Duration) -> Int { Int(Double(n) / (Double(d.components.seconds)
                + Double(d.components.attoseconds) / 1e18)) }
            print("journal audit writer: \(n) entries sent in \(sent) (\(rate(sent))/s), all in the journal after "
                + "\(stored) (\(rate(stored))/s)")
        }
    }
}

/// Foundation's Process is not Sendable; this test only waits on it.
struct SendableProcess: @unchecked Sendable {
    let process: Process
    init(_ process: Process) { self.process = process }
}
