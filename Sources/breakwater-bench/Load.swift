import ArgumentParser
import BreakwaterClient
import CurlTransport
import Foundation
import Histogram
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// What both benchmarks (`breakwater-bench` and `--chaos`) share: the closed loop, its tally, direct libcurl
// calls, child processes and the machine line.

/// Closed-loop load: `concurrency` workers, each sending its next call when its last one ends, for `warmup`
/// seconds unmeasured and then `seconds` measured, as one continuous load (no pause or restart between the two).
///
/// A call counts when it ends inside the measured window: its latency goes into the histogram if it succeeded,
/// its error's name into `failures` if not. Workers start no call after the window; calls still running at its
/// end are cancelled and not counted, so a call waiting on a timeout cannot stretch the window.
struct ClosedLoop: Sendable {
    var concurrency: Int
    var warmup: Double
    var seconds: Double

    /// Runs the load. `checkpoints` are offsets in seconds from the start of the measured window (0 is its start,
    /// `seconds` its end, taken before anything is cancelled); `atCheckpoint` runs at each, with its index, while
    /// the load goes on: the chaos benchmark reads the fakes' and the daemon's counters there.
    func run(checkpoints: [Double] = [], atCheckpoint: (Int) async -> Void = { _ in },
             _ call: @escaping @Sendable () async throws -> Void) async -> Result {
        let windowStart = ContinuousClock.now + .milliseconds(Int64(warmup * 1000))
        let end = windowStart + .milliseconds(Int64(seconds * 1000))
        var result = await withTaskGroup(of: Result.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var r = Result.empty
                    while !Task.isCancelled, ContinuousClock.now < end {
                        let start = ContinuousClock.now
                        var failure: (any Error)?
                        do {
                            try await call()
                        } catch {
                            failure = error
                        }
                        let done = ContinuousClock.now
                        guard done >= windowStart, done <= end else { continue }
                        if let failure {
                            r.fail(failure)
                        } else {
                            r.record(Self.microseconds(done - start))
                        }
                    }
                    return r
                }
            }
            for (index, offset) in checkpoints.enumerated() {
                try? await Task.sleep(until: windowStart + .milliseconds(Int64(offset * 1000)), clock: .continuous)
                await atCheckpoint(index)
            }
            try? await Task.sleep(until: end, clock: .continuous)
            group.cancelAll()
            return await group.reduce(into: Result.empty) { $0.merge($1) }
        }
        result.seconds = seconds
        return result
    }

    static func microseconds(_ d: Duration) -> UInt64 {
        UInt64(d.components.seconds) * 1_000_000 + UInt64(d.components.attoseconds / 1_000_000_000_000)
    }
}

/// Latencies of successful calls in microseconds, plus the failures by name.
struct Result: Sendable {
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .four)
    var errors = 0
    /// Failures keyed by `Result.name(of:)`: the daemon's error code (`UPSTREAM_UNAVAILABLE`), `HTTP 503`, ...
    var failures: [String: Int] = [:]
    var firstError: String?
    var seconds = 0.0

    static var empty: Result { Result() }

    /// Calls that returned a full answer.
    var successes: Int { Int(histogram.totalCount) }

    /// Calls that ended, either way.
    var calls: Int { successes + errors }

    mutating func record(_ us: UInt64) {
        _ = histogram.record(max(1, us))
    }

    mutating func fail(_ error: any Error) {
        errors += 1
        failures[Self.name(of: error), default: 0] += 1
        if firstError == nil { firstError = "\(error)" }
    }

    mutating func merge(_ other: Result) {
        histogram.add(other.histogram)
        errors += other.errors
        failures.merge(other.failures, uniquingKeysWith: +)
        firstError = firstError ?? other.firstError
        seconds += other.seconds
    }

    func p(_ percentile: Double) -> UInt64 { histogram.valueAtPercentile(percentile) }

    var line: String {
        let rate = seconds > 0 ? Double(histogram.totalCount) / seconds : 0
        return String(format: "%8.0f req/s   p50 %6d µs   p90 %6d µs   p99 %6d µs   (%d calls, %d errors)",
                      rate, p(50), p(90), p(99), histogram.totalCount, errors)
    }

    /// A short, stable name for what went wrong, to count failures by: the daemon's protocol code when it gave
    /// one (`STREAM_INTERRUPTED`), else the client's failure kind (`connectionLost`); for direct calls the HTTP
    /// status (`HTTP 503`) or libcurl's failure class (`connectionReset`, `timedOut(idle)`).
    static func name(of error: any Error) -> String {
        switch error {
        case let e as BreakwaterError: e.code?.name ?? "\(e.kind)"
        case let e as TransportError:
            switch e.kind {
            case .timedOut(let phase): "timedOut(\(phase))"
            default: "\(e.kind)"
            }
        case let e as HTTPStatusError: "HTTP \(e.status)"
        default: "\(type(of: error))"
        }
    }
}

/// A direct call answered with a status outside 2xx.
struct HTTPStatusError: Error, CustomStringConvertible {
    var status: Int
    var description: String { "HTTP \(status)" }
}

/// A finished direct HTTP exchange.
struct HTTPReply: Sendable {
    var status: Int
    /// Empty unless the body was asked for.
    var body: [UInt8]
}

/// One HTTP exchange on `engine`, cancelled (libcurl transfer stopped) when the task is. The body is kept only
/// when `keepBody`: a loaded benchmark call discards it, like an app that parses it as it arrives.
func exchange(_ engine: CurlEngine, _ request: HTTPRequest, keepBody: Bool = false) async throws -> HTTPReply {
    let handle = TransferHandle(engine)
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<HTTPReply, any Error>) in
            handle.started(engine.start(request, delegate: OneShot(c, keepBody: keepBody)))
        }
    } onCancel: {
        handle.cancel()
    }
}

/// A direct call as the benchmarks make it: anything but a complete 2xx answer throws.
func directCall(_ engine: CurlEngine, _ request: HTTPRequest) async throws {
    let reply = try await exchange(engine, request)
    guard (200..<300).contains(reply.status) else { throw HTTPStatusError(status: reply.status) }
}

/// Which transfer a task's cancellation has to stop; cancellation may come before the transfer has an id.
final class TransferHandle: Sendable {
    private enum State {
        case waiting
        case started(TransferID)
        case cancelled
    }

    private let engine: CurlEngine
    private let state = Mutex(State.waiting)

    init(_ engine: CurlEngine) {
        self.engine = engine
    }

    func started(_ id: TransferID) {
        let cancelNow = state.withLock { s -> Bool in
            if case .cancelled = s { return true }
            s = .started(id)
            return false
        }
        if cancelNow { engine.cancel(id) }
    }

    func cancel() {
        let id = state.withLock { s -> TransferID? in
            defer { s = .cancelled }
            if case .started(let id) = s { return id }
            return nil
        }
        if let id { engine.cancel(id) }
    }
}

/// Completes a continuation when a direct libcurl transfer ends, with the status (and the body if asked for).
final class OneShot: TransferDelegate, Sendable {
    private let continuation: Mutex<CheckedContinuation<HTTPReply, any Error>?>
    private let status = Atomic<Int>(0)
    private let keepBody: Bool
    private let body = Mutex<[UInt8]>([])

    init(_ c: CheckedContinuation<HTTPReply, any Error>, keepBody: Bool) {
        continuation = Mutex(c)
        self.keepBody = keepBody
    }

    func transferDidReceiveHead(status: Int, headers: [HTTPHeader]) {
        self.status.store(status, ordering: .relaxed)
    }

    func transferDidReceiveBody(_ bytes: [UInt8]) {
        if keepBody { body.withLock { $0 += bytes } }
    }

    func transferDidComplete(_ result: Swift.Result<Void, TransportError>) {
        let c = continuation.withLock { c in
            defer { c = nil }
            return c
        }
        switch result {
        case .success:
            c?.resume(returning: HTTPReply(status: status.load(ordering: .relaxed), body: body.withLock { $0 }))
        case .failure(let e):
            c?.resume(throwing: e)
        }
    }
}

/// A child process whose output goes to a log file.
final class Child: @unchecked Sendable {
    let process = Process()
    let log: String

    /// `environment` is laid over this process's own; `unsetting` names variables the child must not inherit.
    init(_ path: String, _ args: [String], environment: [String: String] = [:], unsetting: [String] = [],
         log: String) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = args
        var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        for name in unsetting { env[name] = nil }
        process.environment = env
        let output = FileHandle(forWritingAtPath: log)
        process.standardOutput = output
        process.standardError = output
        try process.run()
    }

    /// What the child has written so far.
    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// The port from fake-provider's start line. Throws `ChildExited` with its output if it stops first (a
    /// personality it refuses, say), instead of waiting out the 30 s.
    func port() throws -> Int {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let line = output.split(separator: "\n").first(where: { $0.hasPrefix("{") }),
               let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
               let port = o["port"] as? Int {
                return port
            }
            guard process.isRunning else { throw ChildExited(output: output) }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw ValidationError("fake-provider printed no port")
    }

    /// CPU time the process has used so far, user + system (fields 14 and 15 of /proc/PID/stat), in microseconds.
    func cpuMicroseconds() -> Int? {
        guard let stat = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces) start with field 3, the state.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
        return (user + system) * 1_000_000 / sysconf(Int32(_SC_CLK_TCK))
    }

    /// Context switches of all the process's threads so far (`voluntary_ctxt_switches` and
    /// `nonvoluntary_ctxt_switches` of each `/proc/PID/task/*/status`; the process's own status counts its main
    /// thread only).
    func contextSwitches() -> (voluntary: Int, involuntary: Int) {
        let tasks = "/proc/\(process.processIdentifier)/task"
        var total = (voluntary: 0, involuntary: 0)
        for task in (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? [] {
            let status = (try? String(contentsOfFile: "\(tasks)/\(task)/status", encoding: .utf8)) ?? ""
            for line in status.split(separator: "\n") {
                let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard parts.count == 2, let n = Int(parts[1]) else { continue }
                if parts[0].hasPrefix("voluntary_ctxt_switches") { total.voluntary += n }
                if parts[0].hasPrefix("nonvoluntary_ctxt_switches") { total.involuntary += n }
            }
        }
        return total
    }

    /// VmHWM: the most resident memory the process has used, in KiB (shared library pages included).
    func peakRSSKiB() -> Int? { statusField("VmHWM:") }

    /// VmRSS: resident memory now, in KiB (shared library pages included).
    func residentKiB() -> Int? { statusField("VmRSS:") }

    /// RssAnon: the process's own (anonymous) resident memory now, in KiB: heap, stacks, buffers.
    func anonymousRSSKiB() -> Int? { statusField("RssAnon:") }

    /// The process's established TCP connections to `port` now: its socket descriptors whose inodes
    /// `/proc/PID/net/tcp` lists as established to that remote port.
    func tcpConnections(toPort port: Int) -> Int {
        let pid = process.processIdentifier
        // Read to the end: String(contentsOfFile:) stops at a /proc file's first page.
        guard let file = FileHandle(forReadingAtPath: "/proc/\(pid)/net/tcp"),
              let data = try? file.readToEnd(), let table = String(data: data, encoding: .utf8) else { return 0 }
        try? file.close()
        let hex = String(port, radix: 16, uppercase: true)
        let remote = ":" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
        var inodes = Set<Substring>()
        // Fields: sl, local address, remote address, state (01: established), queues, timers, retransmits, uid,
        // timeout, inode.
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 9, fields[2].hasSuffix(remote), fields[3] == "01" else { continue }
            inodes.insert(fields[9])
        }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return descriptors.reduce(0) { count, fd in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                  target.hasPrefix("socket:[") else { return count }
            return inodes.contains(target.dropFirst(8).dropLast()) ? count + 1 : count
        }
    }

    private func statusField(_ name: String) -> Int? {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    }

    /// SIGTERM, then SIGKILL if it has not exited within `seconds`: a daemon draining calls cannot hold the
    /// benchmark up.
    func stop(within seconds: Double = 5) {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }
}

/// Returns once the daemon answers `client`'s HELLO; throws with the daemon's output if it exits first, or after 30 s.
func waitUntilServing(_ client: BreakwaterClient, _ daemon: Child) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while (try? await client.serverLimits()) == nil {
        guard daemon.process.isRunning else { throw ChildExited(output: daemon.output) }
        guard ContinuousClock.now < deadline else { throw ValidationError("daemon did not start; see " + daemon.log) }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// A child process ended before it was ready.
struct ChildExited: Error, CustomStringConvertible {
    var output: String
    var description: String { "exited: " + output.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// The machine a run comes from, and how it was started.
enum Machine {
    /// `2 cores, 23 GiB, AMD EPYC ...`
    static var line: String {
        "\(ProcessInfo.processInfo.activeProcessorCount) cores, "
            + "\(ProcessInfo.processInfo.physicalMemory >> 30) GiB, \(cpuModel)"
    }

    static var cpuModel: String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return info.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces) } ?? "?"
    }

    /// This process's command line, quoted for a POSIX shell where needed, so it can be pasted to run again.
    static var command: String {
        CommandLine.arguments.map { arg in
            let plain = !arg.isEmpty && arg.allSatisfy { $0.isLetter || $0.isNumber || "-_./=,:+@".contains($0) }
            return plain ? arg : "'" + arg.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
        }.joined(separator: " ")
    }
}
