import Foundation
import Glibc
import Synchronization

/// What one wake-up costs on this machine, for reading `--cost`'s figures at 1 call in flight: a thread sleeping in
/// `read` on a Unix socket is woken by one byte and writes it back, over and over; its CPU time ÷ round trips is
/// what a process pays to be woken, read and answer once (on a VM mostly the hypervisor's cost of waking an idle
/// vCPU, charged to the woken thread). A call at 1 in flight wakes the daemon at least twice (its request, its
/// answer), whatever the daemon is written in.
enum WakeFloor {
    struct Figures {
        /// The echoing thread's CPU time per round trip, µs.
        var cpuMicrosPerWake: Double
        /// The round trip as the other side saw it, µs.
        var roundTripMicros: Double
        /// The echoing thread's voluntary context switches per round trip (1: it slept for each byte).
        var switchesPerWake: Double
    }

    static func measure(roundTrips: Int = 20_000) throws -> Figures {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
            throw ChildExited(output: "socketpair failed: errno \(errno)")
        }
        let (client, echo) = (fds[0], fds[1])
        defer { close(client); close(echo) }
        let result = Mutex<(cpu: Double, switches: Int)>((0, 0))
        let finished = DispatchSemaphore(value: 0)
        // RUSAGE_THREAD (Linux's `who` for the calling thread) is a _GNU_SOURCE macro Swift does not import.
        let rusageThread: __rusage_who_t = 1
        let thread = Thread {
            var usageBefore = rusage(), usageAfter = rusage()
            getrusage(rusageThread, &usageBefore)
            var byte: UInt8 = 0
            while read(echo, &byte, 1) == 1 {
                guard write(echo, &byte, 1) == 1 else { break }
            }
            getrusage(rusageThread, &usageAfter)
            func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
            let cpu = seconds(usageAfter.ru_utime) + seconds(usageAfter.ru_stime)
                - seconds(usageBefore.ru_utime) - seconds(usageBefore.ru_stime)
            result.withLock { $0 = (cpu, usageAfter.ru_nvcsw - usageBefore.ru_nvcsw) }
            finished.signal()
        }
        thread.start()
        var byte: UInt8 = 1
        let start = ContinuousClock.now
        for _ in 0..<roundTrips {
            guard write(client, &byte, 1) == 1, read(client, &byte, 1) == 1 else {
                throw ChildExited(output: "the echo thread stopped answering: errno \(errno)")
            }
        }
        let elapsed = ContinuousClock.now - start
        shutdown(client, Int32(SHUT_WR))
        guard finished.wait(timeout: .now() + 10) == .success else {
            throw ChildExited(output: "the echo thread did not finish within 10 s")
        }
        let (cpu, switches) = result.withLock { $0 }
        let n = Double(roundTrips)
        return Figures(cpuMicrosPerWake: cpu * 1e6 / n, roundTripMicros: elapsed / .microseconds(1) / n,
                       switchesPerWake: Double(switches) / n)
    }
}
