import BreakwaterClient
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The sd_notify protocol as systemd sees it: a datagram socket in NOTIFY_SOCKET receives READY=1, STATUS= lines
/// with live figures, WATCHDOG=1 from the serving loop when WATCHDOG_USEC asks for it, and STOPPING=1.
@Suite(.serialized, .timeLimit(.minutes(1))) struct NotifyTests {
    @Test func readyStatusWatchdogAndStopping() async throws {
        let dir = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let notify = try NotifyListener(directory: dir)
        let path = notify.path
        var messages: [String] { notify.messages }
        func drain() { notify.drain() }

        let d = try await DaemonUnderTest.start(environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"])
        defer { d.stop() }
        _ = try await d.client().send(route: "default", body: chat("one"))
        let seen = try await waitUntil(timeout: .seconds(10)) {
            drain()
            let all = messages.joined(separator: "\n")
            // The rate shows from the second heartbeat on (it is a difference of two samples).
            return all.contains("READY=1") && all.contains("WATCHDOG=1") && all.contains("calls: 1,")
                && all.contains("calls/s: ")
        }
        #expect(seen, "\(messages)")
        #expect(messages.first?.contains("READY=1") == true, "READY=1 comes first: \(messages.first ?? "")")
        #expect(messages.joined().contains("STATUS=serving; connections:"))
        #expect(messages.joined().contains("calls/s: "), "STATUS= shows the call rate: \(messages)")

        // Reload (SIGHUP): RELOADING=1 with MONOTONIC_USEC, then READY=1 again once the new config is in force.
        let beforeReload = messages.count
        d.daemon.signal(SIGHUP)
        let reloaded = try await waitUntil {
            drain()
            let after = messages.dropFirst(beforeReload)
            guard let r = after.firstIndex(where: { $0.contains("RELOADING=1") }) else { return false }
            return after[r...].dropFirst().contains { $0.contains("READY=1") }
        }
        #expect(reloaded, "\(messages.dropFirst(beforeReload))")
        #expect(messages.contains { $0.contains("RELOADING=1") && $0.contains("MONOTONIC_USEC=") })
        d.daemon.signal(SIGTERM)
        #expect(try await d.daemon.waitForExit() == 0)
        drain()
        #expect(messages.last?.contains("STOPPING=1") == true || messages.contains { $0.contains("STOPPING=1") })
    }
}
