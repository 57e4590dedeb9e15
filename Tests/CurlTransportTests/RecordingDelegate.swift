import CurlTransport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Records every callback of one transfer and checks the delegate contract as it goes: head at most once
/// and before any body, nothing after completion, completion exactly once.
final class RecordingDelegate: TransferDelegate {
    struct Record {
        var status: Int?
        var headers: [HTTPHeader] = []
        var body: [UInt8] = []
        /// The most bytes one body callback brought: at most the transfer's receive buffer.
        var largestBodyPiece = 0
        var result: Result<Void, TransportError>?
        var heads = 0
        var completions = 0
        var contractViolations: [String] = []
        /// `pthread_self()` of every callback.
        var threads: Set<UInt> = []
    }

    private let record = Mutex(Record())

    var snapshot: Record {
        record.withLock { $0 }
    }

    func transferDidReceiveHead(status: Int, headers: [HTTPHeader]) {
        record.withLock { record in
            if record.heads > 0 || record.completions > 0 || !record.body.isEmpty {
                record.contractViolations.append("head after head, body or completion")
            }
            record.heads += 1
            record.status = status
            record.headers = headers
            record.threads.insert(UInt(pthread_self()))
        }
    }

    func transferDidReceiveBody(_ bytes: [UInt8]) {
        record.withLock { record in
            if record.heads == 0 || record.completions > 0 {
                record.contractViolations.append("body without head or after completion")
            }
            record.body += bytes
            record.largestBodyPiece = max(record.largestBodyPiece, bytes.count)
            record.threads.insert(UInt(pthread_self()))
        }
    }

    func transferDidComplete(_ result: Result<Void, TransportError>) {
        record.withLock { record in
            if record.completions > 0 {
                record.contractViolations.append("second completion")
            }
            record.completions += 1
            record.result = result
            record.threads.insert(UInt(pthread_self()))
        }
    }

    func header(_ name: String) -> String? {
        snapshot.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// The transfer's result once it completes, or nil if it does not within `timeout`.
    func result(within timeout: Duration = .seconds(5)) async -> Result<Void, TransportError>? {
        guard await eventually(within: timeout, { self.snapshot.result != nil }) else {
            return nil
        }
        return snapshot.result
    }

    /// The error the transfer failed with, or nil if it succeeded or did not complete within `timeout`.
    func failure(within timeout: Duration = .seconds(5)) async -> TransportError? {
        guard case .failure(let error) = await result(within: timeout) else {
            return nil
        }
        return error
    }
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; returns whether it held.
func eventually(within timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline {
            return false
        }
        try? await Task.sleep(for: .milliseconds(2))
    }
    return true
}

extension Duration {
    var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// Records an issue unless `result` is a success.
func expectSuccess(
    _ result: Result<Void, TransportError>?,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    switch result {
    case .success:
        break
    case .failure(let error):
        Issue.record("transfer failed: \(error)", sourceLocation: sourceLocation)
    case nil:
        Issue.record("transfer did not complete in time", sourceLocation: sourceLocation)
    }
}

/// Forwards to a `RecordingDelegate`, running `hook` inside the completion callback first (to shut the engine down
/// or start another transfer from there).
final class CompletionHook: TransferDelegate {
    let recorder = RecordingDelegate()
    private let hook: @Sendable () -> Void

    init(_ hook: @escaping @Sendable () -> Void) {
        self.hook = hook
    }

    func transferDidReceiveHead(status: Int, headers: [HTTPHeader]) {
        recorder.transferDidReceiveHead(status: status, headers: headers)
    }

    func transferDidReceiveBody(_ bytes: [UInt8]) {
        recorder.transferDidReceiveBody(bytes)
    }

    func transferDidComplete(_ result: Result<Void, TransportError>) {
        hook()
        recorder.transferDidComplete(result)
    }
}
