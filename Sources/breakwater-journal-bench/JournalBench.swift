import ArgumentParser
import Foundation
import JournalTestKit
import Systemd

#if canImport(Glibc)
import Glibc
#endif

/// How many audit entries a second the writer gets into a real systemd-journald.
///
/// Paced mode (the default) offers `--calls-per-second` calls for `--seconds`, each call the entries a call
/// with one retry leaves (identity, policy, two attempts, retry, completion); flood mode offers entries as fast as
/// the writer drains them. Either way it then counts the entries that reached the journal with journalctl, and
/// prints the rate, the writer's counts, and whether every entry arrived. Needs root: the journald is private,
/// in a mount namespace of its own (JournalHarness), unless `--system-journal` uses the machine's.
@main
struct JournalBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakwater-journal-bench",
        abstract: "Measure how many audit entries per second reach a real systemd-journald."
    )

    @Option(help: "How long to offer load, in seconds.")
    var seconds: Double = 30

    @Option(help: "Calls per second to offer in paced mode.")
    var callsPerSecond: Int = 1_000

    @Flag(help: "Offer entries as fast as the writer drains them instead of pacing calls.")
    var flood = false

    @Option(help: "The writer's queue capacity.")
    var queueCapacity: Int = 16_384

    @Flag(help: "Write into the machine's journald at /run/systemd/journal/socket instead of a private one.")
    var systemJournal = false

    static let entriesPerCall = 6

    func run() throws {
        let harness = systemJournal ? nil : try JournalHarness.start()
        defer { harness?.stop() }
        let capacity = queueCapacity
        let writer = try harness.map { try $0.run { try JournalAuditWriter(configuration: .init(
            queueCapacity: capacity)) } } ?? JournalAuditWriter(configuration: .init(queueCapacity: capacity))
        let run = "bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .milliseconds(Int64(seconds * 1000))
        var calls = 0

        if flood {
            while clock.now < end {
                // Keep the queue half full: the writer's drain rate is what is measured, not the drops.
                if writer.statistics.pending > capacity / 2 {
                    usleep(50)
                    continue
                }
                record(call: calls, run: run, into: writer)
                calls += 1
            }
        } else {
            let interval = Duration.seconds(1) / callsPerSecond
            while clock.now < end {
                let due = start + interval * calls
                if due > clock.now {
                    let wait = due - clock.now
                    usleep(UInt32(max(0, wait.components.attoseconds / 1_000_000_000_000)))
                    continue
                }
                record(call: calls, run: run, into: writer)
                calls += 1
            }
        }
        let offered = clock.now - start
        let flushed = writer.flush(timeout: .seconds(120))
        let drained = clock.now - start
        let expected = calls * Self.entriesPerCall
        let stats = writer.statistics
        var stored = 0
        var arrived = drained
        if let harness {
            // One writer thread, one socket: journald stores entries in the order sent, so once a last marker
            // entry is readable every entry before it is in the journal. Looking up one REQUEST_ID is quick;
            // counting them all is not, so the count comes after the clock stops.
            var marker = AuditEvent(.callCompleted, requestID: "\(run)-end")
            marker.rule = run + "-end"
            writer.record(marker)
            let deadline = clock.now + .seconds(300)
            while try harness.count(matching: ["REQUEST_ID": "\(run)-end"]) == 0, clock.now < deadline {
                usleep(20_000)
            }
            arrived = clock.now - start
            stored = try harness.count(matching: ["RULE": run])
        }

        print("breakwater-journal-bench: \(flood ? "flood" : "paced \(callsPerSecond) calls/s"), "
            + "\(Self.entriesPerCall) entries per call, queue \(capacity)")
        print(String(format: "  offered   %d calls, %d entries in %.2f s: %.0f entries/s", calls, expected,
                     offered.seconds, Double(expected) / offered.seconds))
        print(String(format: "  sent      all %@ after %.2f s: %.0f entries/s into journald's socket",
                     flushed ? "sent" : "NOT sent", drained.seconds, Double(stats.written) / drained.seconds))
        if harness != nil {
            print(String(format: "  journal   %d of %d entries readable after %.2f s: %.0f entries/s sustained",
                         stored, expected, arrived.seconds, Double(stored) / arrived.seconds))
        }
        print("  writer    written \(stats.written), unwritten \(stats.unwritten), dropped \(stats.dropped)")
        let complete = stats.lost == 0 && (harness == nil || stored == expected)
        print(complete ? "  complete: every entry reached the journal" : "  INCOMPLETE: entries were lost")
        if !complete { throw ExitCode(1) }
    }

    /// The entries one call with one retry leaves.
    private func record(call: Int, run: String, into writer: JournalAuditWriter) {
        let requestID = "\(run)-\(call)"
        let peer = AuditPeer(uid: 1000, gid: 1000, pid: 4242)
        func event(_ kind: AuditEventKind) -> AuditEvent {
            var e = AuditEvent(kind, requestID: requestID)
            e.rule = run
            e.agent = "invoice-bot"
            e.tenant = "acme"
            e.action = "invoice.create"
            return e
        }
        var identity = event(.identityCheck)
        identity.decision = .allow
        identity.peer = peer
        var policy = event(.policyDecision)
        policy.decision = .allow
        var first = event(.upstreamAttempt)
        first.provider = "openai"
        first.model = "gpt-4o-mini"
        first.attempt = 1
        first.status = 503
        first.errorClass = "server_error"
        first.latency = .milliseconds(12)
        var retry = event(.retry)
        retry.provider = "openai"
        retry.attempt = 1
        retry.set(.delayMilliseconds, 40)
        var second = first
        second.attempt = 2
        second.status = 200
        second.errorClass = nil
        var done = event(.callCompleted)
        done.outcome = .ok
        done.set(.attempts, 2)
        done.set(.inputTokens, 812)
        done.set(.outputTokens, 95)
        done.latency = .milliseconds(70)
        for e in [identity, policy, first, retry, second, done] { writer.record(e) }
    }
}

extension Duration {
    fileprivate var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
