import CurlTransport
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A test-only HTTP/1.1 server on 127.0.0.1 built on blocking POSIX sockets, a thread per connection.
///
/// Each request is answered by a scripted `Action`, which is how the tests produce slow, stalled, truncated
/// and reset responses that a well-behaved server never sends. It records what it received and how
/// connections ended, so tests can check what really went over the wire.
final class LoopbackServer: Sendable {
    /// How to answer one request.
    enum Action: Sendable {
        /// A complete response with `Content-Length`, after `delay`; the connection stays open.
        case respond(status: Int, headers: [HTTPHeader] = [], body: [UInt8] = [], delay: Duration = .zero)
        /// These exact bytes; the connection stays open for the next request.
        case raw([UInt8])
        /// A head announcing `contentLength` bytes and the first `bodyPrefix` of them, then nothing until
        /// the client goes away.
        case headThenStall(contentLength: Int, bodyPrefix: [UInt8])
        /// A chunked response that sends `chunk` every `interval` until the client goes away.
        case drip(chunk: [UInt8], interval: Duration)
        /// A head announcing `contentLength` bytes, `bodyPrefix` of them, then a normal close (FIN).
        case partialBodyThenClose(contentLength: Int, bodyPrefix: [UInt8])
        /// A head announcing `contentLength` bytes, `bodyPrefix` of them, then a TCP reset (RST).
        case partialBodyThenReset(contentLength: Int, bodyPrefix: [UInt8])
        /// Reads the request and never answers; waits until the client goes away.
        case silence
    }

    struct ReceivedRequest: Sendable {
        var method: String
        var target: String
        var headers: [HTTPHeader]
        var body: [UInt8]
        /// Which accepted connection (0, 1, ...) carried the request.
        var connection: Int

        func header(_ name: String) -> String? {
            headers.first { $0.name.lowercased() == name.lowercased() }?.value
        }
    }

    private struct State {
        var requests: [ReceivedRequest] = []
        var connectionsAccepted = 0
        var closedByClient = 0
        var stopping = false
        /// Every descriptor a server thread still owns; `stop()` shuts them down (never closes them, so a
        /// number is never reused under a thread that still holds it).
        var openDescriptors: Set<Int32> = []
    }

    let port: UInt16
    private let script: @Sendable (ReceivedRequest) -> Action
    private let state = Mutex(State())

    /// Binds 127.0.0.1 on an ephemeral port and starts accepting.
    init(_ script: @escaping @Sendable (ReceivedRequest) -> Action) throws {
        let (listener, port) = try Self.listen(backlog: 128)
        self.port = port
        self.script = script
        state.withLock { _ = $0.openDescriptors.insert(listener) }
        Thread { [self] in acceptLoop(listener) }.start()
    }

    deinit {
        stop()
    }

    var baseURL: String {
        "http://127.0.0.1:\(port)"
    }

    var requests: [ReceivedRequest] {
        state.withLock { $0.requests }
    }

    var connectionsAccepted: Int {
        state.withLock { $0.connectionsAccepted }
    }

    /// Connections the client ended (EOF or reset) while the server was still using them.
    var connectionsClosedByClient: Int {
        state.withLock { $0.closedByClient }
    }

    /// Shuts down the listener and every open connection; the server threads then exit.
    func stop() {
        state.withLock { state in
            state.stopping = true
            for descriptor in state.openDescriptors {
                _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR))
            }
        }
    }

    // MARK: Sockets

    /// A listening TCP socket on 127.0.0.1 with an ephemeral port.
    static func listen(backlog: Int32) throws -> (Int32, UInt16) {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else {
            throw POSIXFailure(call: "socket", code: errno)
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, Glibc.listen(descriptor, backlog) == 0 else {
            let code = errno
            close(descriptor)
            throw POSIXFailure(call: "bind/listen", code: code)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return (descriptor, UInt16(bigEndian: address.sin_port))
    }

    /// A port on 127.0.0.1 that nothing listens on: bound once, then released.
    static func closedPort() throws -> UInt16 {
        let (descriptor, port) = try listen(backlog: 1)
        close(descriptor)
        return port
    }

    struct POSIXFailure: Error {
        var call: String
        var code: Int32
    }

    private func acceptLoop(_ listener: Int32) {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR {
                    continue
                }
                break
            }
            let connection: Int? = state.withLock { state in
                guard !state.stopping else {
                    return nil
                }
                state.openDescriptors.insert(client)
                state.connectionsAccepted += 1
                return state.connectionsAccepted - 1
            }
            guard let connection else {
                close(client)
                break
            }
            Thread { [self] in serve(client, connection: connection) }.start()
        }
        release(listener)
    }

    private func release(_ descriptor: Int32) {
        state.withLock { _ = $0.openDescriptors.remove(descriptor) }
        close(descriptor)
    }

    private func clientWentAway() {
        state.withLock { state in
            if !state.stopping {
                state.closedByClient += 1
            }
        }
    }

    private func serve(_ descriptor: Int32, connection: Int) {
        defer { release(descriptor) }
        var buffer: [UInt8] = []
        while true {
            guard let request = readRequest(descriptor, &buffer, connection: connection) else {
                clientWentAway()
                return
            }
            state.withLock { $0.requests.append(request) }
            switch script(request) {
            case .respond(let status, let headers, let body, let delay):
                if delay > .zero {
                    Thread.sleep(forTimeInterval: delay.inSeconds)
                }
                var head = "HTTP/1.1 \(status) Scripted\r\nContent-Length: \(body.count)\r\n"
                for header in headers {
                    head += "\(header.name): \(header.value)\r\n"
                }
                guard send(descriptor, Array((head + "\r\n").utf8) + body) else {
                    return
                }
            case .raw(let bytes):
                guard send(descriptor, bytes) else {
                    return
                }
            case .headThenStall(let contentLength, let prefix):
                _ = send(descriptor, Self.head(contentLength: contentLength) + prefix)
                waitForClientToLeave(descriptor)
                return
            case .drip(let chunk, let interval):
                guard send(descriptor, Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)) else {
                    return
                }
                let framed = Array((String(chunk.count, radix: 16) + "\r\n").utf8) + chunk + Array("\r\n".utf8)
                while send(descriptor, framed) {
                    Thread.sleep(forTimeInterval: interval.inSeconds)
                }
                clientWentAway()
                return
            case .partialBodyThenClose(let contentLength, let prefix):
                _ = send(descriptor, Self.head(contentLength: contentLength) + prefix)
                return
            case .partialBodyThenReset(let contentLength, let prefix):
                _ = send(descriptor, Self.head(contentLength: contentLength) + prefix)
                var lingerNow = linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &lingerNow, socklen_t(MemoryLayout<linger>.size))
                return
            case .silence:
                waitForClientToLeave(descriptor)
                return
            }
        }
    }

    private static func head(contentLength: Int) -> [UInt8] {
        Array("HTTP/1.1 200 OK\r\nContent-Length: \(contentLength)\r\n\r\n".utf8)
    }

    /// Blocks until the client closes or resets the connection (or `stop()` shuts it down).
    private func waitForClientToLeave(_ descriptor: Int32) {
        var scratch = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = scratch.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count > 0 || (count < 0 && errno == EINTR) {
                continue
            }
            clientWentAway()
            return
        }
    }

    private func send(_ descriptor: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { raw in
                Glibc.send(descriptor, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno == EINTR {
                    continue
                }
                return false
            }
            offset += sent
        }
        return true
    }

    /// Reads one request (head and `Content-Length` body); nil when the connection ends first.
    private func readRequest(_ descriptor: Int32, _ buffer: inout [UInt8], connection: Int) -> ReceivedRequest? {
        let terminator = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while true {
            if let end = Self.find(terminator, in: buffer) {
                headEnd = end
                break
            }
            guard receive(descriptor, into: &buffer) else {
                return nil
            }
        }
        guard let headEnd else {
            return nil
        }
        let headText = String(decoding: buffer[..<headEnd], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else {
            return nil
        }
        var headers: [HTTPHeader] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else {
                continue
            }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers.append(HTTPHeader(name: String(line[..<colon]), value: value))
        }
        let length = headers.first { $0.name.lowercased() == "content-length" }.flatMap { Int($0.value) } ?? 0
        let bodyStart = headEnd + terminator.count
        while buffer.count < bodyStart + length {
            guard receive(descriptor, into: &buffer) else {
                return nil
            }
        }
        let body = Array(buffer[bodyStart..<(bodyStart + length)])
        buffer.removeFirst(bodyStart + length)
        return ReceivedRequest(
            method: String(requestLine[0]),
            target: String(requestLine[1]),
            headers: headers,
            body: body,
            connection: connection
        )
    }

    private func receive(_ descriptor: Int32, into buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR {
                continue
            }
            guard count > 0 else {
                return false
            }
            buffer.append(contentsOf: chunk[..<count])
            return true
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else {
            return nil
        }
        return (0...(haystack.count - needle.count)).first { start in
            haystack[start..<(start + needle.count)].elementsEqual(needle)
        }
    }
}
