import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

/// Clients that open many streamed calls and never read an answer (issue 11's acceptance case): the daemon must
/// not pull the providers' answers into its memory. With flow control (HELLO `stream_window`) each call stops at
/// its credit; without it, at the connection's 1 MiB write buffer. Either way the transfers pause (libcurl stops
/// reading, so TCP holds the provider back), RSS stays bounded, a healthy connection's calls keep their latency,
/// and after the connections close the memory goes back (malloc_trim once idle). Prints its figures:
/// `swift test --filter NeverReadingClient`.
@Suite(.serialized, .timeLimit(.minutes(3))) struct NeverReadingClientTests {
    /// One healthy streamed call on its own connection, start to end.
    static func healthyStream(_ client: BreakwaterClient) async throws -> Duration {
        let started = ContinuousClock.now
        let s = try await client.stream(route: "healthy", body: chat("healthy"))
        for try await _ in s {}
        return ContinuousClock.now - started
    }

    enum Case: String, CaseIterable, CustomTestStringConvertible {
        case oneConnectionWithCredit, tenConnectionsWithCredit, oneConnectionWithoutFlowControl
        var connections: Int { self == .tenConnectionsWithCredit ? 10 : 1 }
        var window: UInt32? { self == .oneConnectionWithoutFlowControl ? nil : 65_536 }
        var testDescription: String { rawValue }
    }

    @Test(arguments: Case.allCases)
    func streamsNobodyReadsStayBoundedAndTheMemoryComesBack(_ c: Case) async throws {
        // Each answer: 100 chunks of ~5 KB, about 0.5 MB; 250 of them would be 125 MB if drained.
        let long = Personality(name: "long-streams", defaultStep: FaultStep(
            chunks: 100, content: String(repeating: "word ", count: 100_000)))
        let d = try await DaemonUnderTest.start(
            fakePersonality: long,
            extraConfig: """
            limits:
              max_concurrent_calls: 256
            """,
            routes: "  default:\n    - provider: fake\n      model: gpt-4o-mini\n"
                + "  healthy:\n    - provider: fake\n      model: gpt-4o-mini")
        defer { d.stop() }
        let pid = d.daemon.pid
        let healthy = BreakwaterClient(socketPath: d.socket, clientName: "healthy")
        // The healthy route's answers are as long (one personality); what matters is that they are read.
        let idleLatency = try await Self.healthyStream(healthy)

        /// `count` streamed calls that nobody reads, on `connections` connections.
        func unread(_ count: Int, on connections: Int) throws -> [RawConnection] {
            try (0..<connections).map { _ in
                let conn = try RawConnection(path: d.socket)
                let hello = try conn.hello(streamWindow: c.window)
                #expect(hello.streamWindow == c.window)
                for i in 0..<(count / connections) {
                    let id = StreamID(2 * i + 1)
                    conn.write(CallRequest(route: "default", stream: true).frame(streamID: id))
                    conn.write(.data(streamID: id, chat("a long answer nobody reads"), endStream: true))
                }
                return conn
            }
        }
        // The baseline is the daemon idle after it has once paused a few streams, so the pages of code that
        // pausing runs (which stay mapped) are in it; and the lowest RSS over 3 s, past one heartbeat (2 s),
        // which hands freed memory back once no call is in flight.
        var warmUp = try unread(5, on: 1)
        // (Without flow control, one or two of the five may fit whole in the socket and the write buffer.)
        #expect(try await waitUntil(timeout: .seconds(20)) {
            let s = try await d.status()
            let paused = s["calls_waiting_for_reader"] as? Int ?? 0
            return paused >= 3 && paused == s["calls_in_flight"] as? Int
        })
        warmUp.removeAll()
        #expect(try await waitUntil { try await d.status()["calls_in_flight"] as? Int == 0 })
        var (baseline, anonBaseline, fileBaseline) = (Double.infinity, Double.infinity, Double.infinity)
        for _ in 0..<12 {
            try await Task.sleep(for: .milliseconds(250))
            if residentMB(pid) < baseline {
                (baseline, anonBaseline, fileBaseline) = (residentMB(pid), residentMB(pid, "RssAnon"),
                                                          residentMB(pid, "RssFile"))
            }
        }

        let completedBefore = d.fake.stats().completed
        var raw = try unread(250, on: c.connections)
        // Every call still running is paused for its reader. With credit, that is all 250; without, the first
        // answers may fit whole in the socket and the 1 MiB write buffer before the connection is held back.
        var (paused, running, failed) = (0, 0, 0)
        // (Within the provider's 30 s total timeout, which goes on while a call is paused.)
        let allPaused = try await waitUntil(timeout: .seconds(20), interval: .milliseconds(250)) {
            let s = try await d.status()
            (paused, running) = (s["calls_waiting_for_reader"] as? Int ?? 0, s["calls_in_flight"] as? Int ?? -1)
            failed = s["calls_failed"] as? Int ?? -1
            return paused == running && paused >= 240
        }
        let provider = d.fake.stats()
        #expect(allPaused, "\(paused) of \(running) calls in flight paused, \(failed) failed; provider: \(provider)")
        let readBefore = try await d.status()["upstream_body_bytes"] as? Int ?? 0
        var peak = residentMB(pid)
        // Nothing more comes in while they stay paused: sample a while and keep the highest.
        for _ in 0..<10 {
            try await Task.sleep(for: .milliseconds(200))
            peak = max(peak, residentMB(pid))
        }
        let read = (try await d.status()["upstream_body_bytes"] as? Int ?? 0) - readBefore
        let readMB = Double(read) / 1_000_000
        let busyLatency = try await Self.healthyStream(healthy)
        print("never-reading client, \(c): 250 streams on \(c.connections) connection(s), window "
              + "\(c.window.map(String.init) ?? "none"): daemon RSS \(baseline) MB idle, \(peak) MB peak "
              + "(+\(peak - baseline) MB); \(paused) calls paused (\(failed) failed) after \(Double(readBefore) / 1_000_000) MB read from "
              + "the provider (the 250 answers are 125 MB), \(readMB) MB in the 2 s after, the provider wrote \(provider.completed - completedBefore) of 250 answers whole (into loopback TCP buffers, which hold 0.5 MB); "
              + "a healthy stream took \(idleLatency) idle, \(busyLatency) beside them")
        #expect(peak - baseline <= 64, "RSS grew by \(peak - baseline) MB")
        #expect(read == 0, "paused transfers read nothing more from the provider: \(read) bytes")
        #expect(busyLatency < idleLatency * 4 + .milliseconds(500), "the healthy stream was held up")

        raw.removeAll()  // closes the sockets: the calls are cancelled
        let back = try await waitUntil(timeout: .seconds(20), interval: .milliseconds(250)) {
            residentMB(pid) <= baseline + 5
        }
        // Settled: the lowest over the next 3 s (past a heartbeat), as the baseline was taken.
        var (settled, anon, file) = (residentMB(pid), residentMB(pid, "RssAnon"), residentMB(pid, "RssFile"))
        for _ in 0..<12 {
            try await Task.sleep(for: .milliseconds(250))
            if residentMB(pid) < settled {
                (settled, anon, file) = (residentMB(pid), residentMB(pid, "RssAnon"), residentMB(pid, "RssFile"))
            }
        }
        print("  after the connections closed: \(settled) MB (baseline \(baseline) MB, +\(settled - baseline)); heap "
              + "and stacks \(anon) MB (\(anonBaseline) MB), program pages \(file) MB (\(fileBaseline) MB)")
        #expect(back, "RSS \(residentMB(pid)) MB, baseline \(baseline) MB")
        #expect(try await d.status()["calls_waiting_for_reader"] as? Int == 0)
        _ = try await Self.healthyStream(healthy)
    }

    /// The Swift shim gives credit back only as the app takes chunks: a stream the app holds and does not iterate
    /// is paused in the daemon (and so buffers at most a window in the app); once iterated, it arrives whole.
    @Test func aStreamTheAppDoesNotIterateIsPausedThenArrivesWhole() async throws {
        let d = try await DaemonUnderTest.start(fakePersonality: Personality(
            name: "long", defaultStep: FaultStep(chunks: 100, content: String(repeating: "word ", count: 100_000))))
        defer { d.stop() }
        let client = d.client()
        let stream = try await client.stream(route: "default", body: chat("hold on"))
        let paused = try await waitUntil(timeout: .seconds(20), interval: .milliseconds(100)) {
            try await d.status()["calls_waiting_for_reader"] as? Int == 1
        }
        #expect(paused, "the daemon stopped reading the provider for the stream nobody iterates")
        var chunks = 0
        for try await _ in stream { chunks += 1 }
        #expect(chunks >= 100, "every content chunk: \(chunks)")
        #expect(stream.trailers?.error == nil)
        #expect(try await d.status()["calls_waiting_for_reader"] as? Int == 0)
    }
}
