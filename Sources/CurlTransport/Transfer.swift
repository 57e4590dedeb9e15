import CCurl

/// One libcurl easy handle plus its error buffer, kept together so both can be reused across transfers.
///
/// Used only within the engine's turns.
final class EasyHandle {
    let raw: UnsafeMutableRawPointer
    /// `CURLOPT_ERRORBUFFER` storage: libcurl writes its human-readable error text here.
    let errorBuffer: UnsafeMutablePointer<CChar>

    init?() {
        guard let raw = curl_easy_init() else {
            return nil
        }
        self.raw = raw
        self.errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        self.errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    deinit {
        curl_easy_cleanup(raw)
        errorBuffer.deallocate()
    }

    /// Sets the receive buffer's size for the next transfer (`HTTPRequest.receiveBufferBytes`); false when libcurl
    /// refuses, and then the handle must not be used.
    ///
    /// libcurl (7.88) refuses a new size while the handle still holds a buffer, which it frees when a transfer is
    /// done but not when one is removed while it waited for a connection; `curl_easy_reset` then sets the default
    /// size back without freeing it, so the handle would read 16 KB into the smaller one it holds. Such a handle
    /// is dropped.
    func sizeReceiveBuffer(_ bytes: Int) -> Bool {
        bw_curl_easy_setopt_long(raw, CURLOPT_BUFFERSIZE, bytes) == CURLE_OK
    }

    /// libcurl's error text for the last transfer, falling back to the generic text for `code`.
    func errorText(for code: CURLcode) -> String {
        if errorBuffer.pointee != 0 {
            errorBuffer[Int(CURL_ERROR_SIZE) - 1] = 0
            return String(cString: errorBuffer)
        }
        return String(cString: curl_easy_strerror(code))
    }
}

/// The engine-thread state of one transfer; libcurl's callbacks receive it as userdata.
///
/// Used only within the engine's turns: it is created, driven and finished by `EngineLoop`.
final class Transfer {
    let id: TransferID
    let delegate: any TransferDelegate
    let connectTimeout: UInt64?
    let firstByteTimeout: UInt64?
    let idleTimeout: UInt64?
    let totalTimeout: UInt64?

    /// The easy handle while the transfer is attached to the multi handle; `nil` once finished.
    var easy: EasyHandle?
    var headerList: UnsafeMutablePointer<curl_slist>?
    var startedAt: UInt64 = 0
    /// When the last response byte (head or body) arrived; 0 until the first one.
    var lastByteAt: UInt64 = 0

    private var status = 0
    private var headers: [HTTPHeader] = []
    private(set) var headDelivered = false
    /// The delegate paused receiving (its reader is behind): the idle limit does not run meanwhile.
    var paused = false
    /// The request while the transfer waits for room in its pool (`startedAt` is when it began waiting); nil once
    /// it runs.
    var waitingRequest: HTTPRequest? {
        didSet { isWaiting = waitingRequest != nil }
    }
    /// `waitingRequest != nil`, kept apart: the loop asks on every turn, and testing the optional copies the request.
    private(set) var isWaiting = false
    /// Whether the loop counts this transfer among those whose clock it watches.
    var watched = false
    /// The pool it runs (or waits) under, if any.
    var pool: PoolQueue?

    /// The loop's next look at the clocks; lowered when the first byte switches this transfer to its idle limit,
    /// which may run out before its first-byte limit would have.
    private let scan: ScanMark

    init(id: TransferID, delegate: any TransferDelegate, timeouts: TransferTimeouts, scan: ScanMark) {
        self.scan = scan
        self.id = id
        self.delegate = delegate
        self.connectTimeout = timeouts.connect?.clampedNanoseconds
        self.firstByteTimeout = timeouts.firstByte?.clampedNanoseconds
        self.idleTimeout = timeouts.idle?.clampedNanoseconds
        self.totalTimeout = timeouts.total?.clampedNanoseconds
    }

    private func byteArrived() {
        let first = lastByteAt == 0
        lastByteAt = MonotonicClock.now()
        if first, let idleTimeout { scan.at = min(scan.at, lastByteAt &+ idleTimeout) }
    }

    /// Whether the loop itself must watch this transfer's clock: a first-byte or idle limit, or, while it waits
    /// for its pool, its total limit.
    var hasLoopDeadlines: Bool {
        isWaiting ? totalTimeout != nil : firstByteTimeout != nil || idleTimeout != nil
    }

    /// The next instant at which a first-byte, idle or (while waiting for the pool) total limit runs out, if any.
    var loopDeadline: UInt64? {
        if isWaiting { return totalTimeout.map { startedAt &+ $0 } }
        if paused { return nil }
        if lastByteAt == 0 {
            return firstByteTimeout.map { startedAt &+ $0 }
        }
        return idleTimeout.map { lastByteAt &+ $0 }
    }

    /// The loop-enforced limit that `loopDeadline` belongs to.
    var loopDeadlinePhase: TransportError.TimeoutPhase {
        isWaiting ? .connectionWait : lastByteAt == 0 ? .firstByte : .idle
    }

    /// Handles one header line from `CURLOPT_HEADERFUNCTION` (status line, field, or the blank line ending a
    /// head). Interim 1xx heads are dropped; trailers after the final head are ignored.
    func receiveHeaderLine(_ line: UnsafeRawBufferPointer) {
        byteArrived()
        guard !headDelivered else {
            return
        }
        var end = line.count
        while end > 0, line[end - 1] == UInt8(ascii: "\n") || line[end - 1] == UInt8(ascii: "\r") {
            end -= 1
        }
        if end == 0 {
            finishHead()
            return
        }
        let content = UnsafeRawBufferPointer(rebasing: line[0..<end])
        if Self.isStatusLine(content) {
            status = Self.parseStatus(content)
            headers.removeAll(keepingCapacity: true)
            return
        }
        if content[0] == UInt8(ascii: " ") || content[0] == UInt8(ascii: "\t") {
            // Obsolete line folding: the line continues the previous field's value.
            if !headers.isEmpty {
                headers[headers.count - 1].value += " " + Self.trimmed(content)
            }
            return
        }
        guard let colon = content.firstIndex(of: UInt8(ascii: ":")) else {
            return
        }
        let name = String(decoding: UnsafeRawBufferPointer(rebasing: content[0..<colon]), as: UTF8.self)
        let value = Self.trimmed(UnsafeRawBufferPointer(rebasing: content[(colon + 1)...]))
        headers.append(HTTPHeader(name: name, value: value))
    }

    /// Handles one chunk from `CURLOPT_WRITEFUNCTION`, announcing the head first if it never ended cleanly.
    /// Returns false when the delegate pauses instead: libcurl keeps the chunk and offers it again on resume.
    func receiveBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        byteArrived()
        if !headDelivered {
            deliverHead()
        }
        if delegate.transferShouldPause() {
            paused = true
            return false
        }
        delegate.transferDidReceiveBody(Array(bytes))
        return true
    }

    /// Announces the head if it has not been, using libcurl's response code when no status line was parsed.
    func deliverHead() {
        guard !headDelivered else {
            return
        }
        headDelivered = true
        if status == 0, let easy {
            var code = 0
            if bw_curl_easy_getinfo_long(easy.raw, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK {
                status = code
            }
        }
        let headers = self.headers
        self.headers = []
        delegate.transferDidReceiveHead(status: status, headers: headers)
    }

    private func finishHead() {
        if (100..<200).contains(status) {
            status = 0
            headers.removeAll(keepingCapacity: true)
            return
        }
        deliverHead()
    }

    private static func isStatusLine(_ line: UnsafeRawBufferPointer) -> Bool {
        line.count >= 5 && line[0] == UInt8(ascii: "H") && line[1] == UInt8(ascii: "T")
            && line[2] == UInt8(ascii: "T") && line[3] == UInt8(ascii: "P") && line[4] == UInt8(ascii: "/")
    }

    /// The three-digit code after the protocol version ("HTTP/1.1 200 OK", "HTTP/2 200"); 0 if absent.
    private static func parseStatus(_ line: UnsafeRawBufferPointer) -> Int {
        guard let space = line.firstIndex(of: UInt8(ascii: " ")) else {
            return 0
        }
        var code = 0
        var digits = 0
        for byte in line[(space + 1)...] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 3 else {
                break
            }
            code = code * 10 + Int(byte - UInt8(ascii: "0"))
            digits += 1
        }
        return digits == 3 ? code : 0
    }

    private static func trimmed(_ bytes: UnsafeRawBufferPointer) -> String {
        var start = 0
        var end = bytes.count
        while start < end, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") {
            start += 1
        }
        while end > start, bytes[end - 1] == UInt8(ascii: " ") || bytes[end - 1] == UInt8(ascii: "\t") {
            end -= 1
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }
}

/// `CURLOPT_HEADERFUNCTION`: one call per header line, userdata is the unretained `Transfer`.
func curlHeaderCallback(
    _ buffer: UnsafeMutablePointer<CChar>?,
    _ size: Int,
    _ count: Int,
    _ userdata: UnsafeMutableRawPointer?
) -> Int {
    let length = size * count
    guard let buffer, let userdata else {
        return length
    }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    transfer.receiveHeaderLine(UnsafeRawBufferPointer(start: buffer, count: length))
    return length
}

/// `CURLOPT_WRITEFUNCTION`: one call per received body chunk, userdata is the unretained `Transfer`.
func curlWriteCallback(
    _ buffer: UnsafeMutablePointer<CChar>?,
    _ size: Int,
    _ count: Int,
    _ userdata: UnsafeMutableRawPointer?
) -> Int {
    let length = size * count
    guard let buffer, let userdata, length > 0 else {
        return length
    }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    // CURL_WRITEFUNC_PAUSE is 0x10000001 (curl.h; a macro built from a macro, so Swift does not import it).
    return transfer.receiveBody(UnsafeRawBufferPointer(start: buffer, count: length)) ? length : 0x1000_0001
}

/// When the engine loop next looks at its transfers' clocks (within a turn only): no first-byte, idle or pool-wait
/// limit runs out before `at`. Shared by the loop and its transfers.
final class ScanMark {
    var at: UInt64 = 0
}
