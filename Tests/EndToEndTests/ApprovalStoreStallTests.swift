import BreakwaterClient
import Foundation
import Testing

/// Another process holds the state database locked (a backup, `sqlite3` left open in a transaction) while a call
/// asks for an approval. The approval's write waits for the lock — on the state store's queue, not on the event
/// loop — so every other call goes on, the watchdog keeps pinging, and the waiting call hears "pending" only once
/// its approval is on disk.
@Suite(.serialized, .timeLimit(.minutes(1))) struct ApprovalStoreStallTests {
    /// Holds an exclusive lock on an SQLite file until `release()`: Python's sqlite3 (the real SQLite), in a child.
    final class LockHolder: @unchecked Sendable {
        let process = Process()
        private let input = Pipe()
        private let output = Pipe()

        init(database: String) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", """
                import sqlite3, sys
                c = sqlite3.connect(sys.argv[1], isolation_level=None)
                c.execute("BEGIN EXCLUSIVE")
                print("locked", flush=True)
                sys.stdin.readline()
                c.execute("ROLLBACK")
                """, database]
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            let line = output.fileHandleForReading.availableData  // blocks until "locked" (or EOF if it failed)
            guard String(decoding: line, as: UTF8.self).contains("locked") else {
                throw POSIXError(.EBUSY)
            }
        }

        func release() {
            input.fileHandleForWriting.write(Data("go\n".utf8))
            process.waitUntilExit()
        }
    }

    @Test func otherCallsAndTheWatchdogGoOnWhileAnApprovalWriteWaits() async throws {
        let dir = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let notify = try NotifyListener(directory: dir)
        let d = try await DaemonUnderTest.start(policy: GovernanceE2ETests.policy(),
                                                environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"],
                                                withStateDirectory: true)
        defer { d.stop() }
        let gov = GovernanceE2ETests()
        let ops = gov.client(d, GovernanceE2ETests.opsToken)
        _ = try await ops.send(route: "default", body: chat("warm up"))  // connected, database created

        let lock = try LockHolder(database: d.dir + "/state/breakwater.sqlite")
        let notices = IDBox()
        let refund = gov.client(d, GovernanceE2ETests.refundToken)
        let askedAt = ContinuousClock.now
        let waiting = Task {
            try await refund.send(route: "default", body: chat("refund"), action: "refund.issue", tenant: "acme",
                                  onNotice: { notices.add($0.approvalID ?? "") })
        }
        // The approval has been asked for (its audit event and log line come before the write).
        #expect(try await waitUntil(timeout: .seconds(3)) {
            (try? String(contentsOfFile: d.dir + "/daemon.log", encoding: .utf8))?.contains("approval requested")
                == true
        })
        notify.drain()
        let pingsBefore = notify.messages.filter { $0.contains("WATCHDOG=1") }.count
        let stalledAt = ContinuousClock.now
        // SQLite waits up to its 5 s busy timeout for the lock: these must all finish well inside it.
        for i in 0..<5 {
            let answer = try await ops.send(route: "default", body: chat("during the stall \(i)"))
            #expect(answer.head.status == 200)
        }
        let callsTook = ContinuousClock.now - stalledAt
        #expect(try await waitUntil(timeout: .seconds(2)) {
            notify.drain()
            return notify.messages.filter { $0.contains("WATCHDOG=1") }.count >= pingsBefore + 3
        }, "the serving loop still pings the watchdog (every 200 ms) while the write waits")
        #expect(callsTook < .seconds(1), "5 plain calls on another connection took \(callsTook)")
        let within = ContinuousClock.now - askedAt
        #expect(within < .seconds(4), "all of it inside SQLite's 5 s busy wait (took \(within))")
        #expect(notices.count == 0, "no NOTICE before the approval is on disk")

        lock.release()
        #expect(try await waitUntil(timeout: .seconds(5)) { notices.count == 1 },
                "NOTICE once the write committed")
        waiting.cancel()
        _ = try? await waiting.value
        print("approval write stalled: 5 calls on another connection in \(callsTook); "
              + "\(notify.messages.filter { $0.contains("WATCHDOG=1") }.count - pingsBefore) watchdog pings meanwhile")
    }
}
