import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One request to send to the fake.
struct HTTPRequest: Sendable {
    var method = "POST"
    var path: String
    var headers: [(String, String)] = []
    var body = ""
}

/// One answer as the fake wrote it.
struct HTTPReply: Sendable {
    var status: Int
    /// Header names lowercased; a repeated header keeps its last value.
    var headers: [String: String]
    var body: String

    /// The body as a JSON object, or nil when it is not one.
    var json: [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
    }

    /// A header as an integer.
    func int(_ name: String) -> Int? {
        headers[name].flatMap { Int($0) }
    }
}

struct LoopbackHTTPError: Error, CustomStringConvertible {
    var description: String
}

/// Just enough HTTP/1.1 to talk to the fake over a blocking loopback socket. Requests given together are
/// pipelined on one connection (written back to back before any answer is read), so the fake decides them
/// without a client round trip between them; the answers are read by their `content-length`. Every read and
/// write gives up after `timeout`.
enum LoopbackHTTP {
    static func send(_ request: HTTPRequest, port: Int, timeout: Duration = .seconds(10)) throws -> HTTPReply {
        try send([request], port: port, timeout: timeout)[0]
    }

    static func send(_ requests: [HTTPRequest], port: Int, timeout: Duration = .seconds(10)) throws -> [HTTPReply] {
        let fd = socket(AF_INET, socketStream, 0)
        guard fd >= 0 else { throw LoopbackHTTPError(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var limit = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw LoopbackHTTPError(description: "connect: errno \(errno)") }

        var wire = ""
        for (index, request) in requests.enumerated() {
            wire += "\(request.method) \(request.path) HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            wire += "content-type: application/json\r\ncontent-length: \(request.body.utf8.count)\r\n"
            for (name, value) in request.headers {
                wire += "\(name): \(value)\r\n"
            }
            if index == requests.count - 1 {
                wire += "connection: close\r\n"
            }
            wire += "\r\n" + request.body
        }
        try sendAll(fd, Array(wire.utf8))

        // The last request asked the fake to close: read to the end.
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw LoopbackHTTPError(description: "recv: errno \(errno) after \(bytes.count) bytes") }
            bytes += chunk[0..<n]
        }
        return try parse(bytes, count: requests.count)
    }

    /// `count` answers framed by `content-length`, one after the other.
    private static func parse(_ bytes: [UInt8], count: Int) throws -> [HTTPReply] {
        var replies: [HTTPReply] = []
        var offset = 0
        let separator = Array("\r\n\r\n".utf8)
        while replies.count < count {
            guard let end = firstIndex(of: separator, in: bytes, from: offset) else {
                throw LoopbackHTTPError(description: "answer \(replies.count + 1) of \(count) has no complete head")
            }
            let head = String(decoding: bytes[offset..<end], as: UTF8.self)
            var lines = head.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst().split(separator: " ")
            guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
                throw LoopbackHTTPError(description: "bad status line in \(head)")
            }
            var headers: [String: String] = [:]
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...]
                    .trimmingCharacters(in: .whitespaces)
            }
            let length = headers["content-length"].flatMap { Int($0) } ?? 0
            let bodyStart = end + separator.count
            guard bodyStart + length <= bytes.count else {
                throw LoopbackHTTPError(description: "answer \(replies.count + 1) of \(count) is cut short")
            }
            let body = String(decoding: bytes[bodyStart..<bodyStart + length], as: UTF8.self)
            replies.append(HTTPReply(status: status, headers: headers, body: body))
            offset = bodyStart + length
        }
        return replies
    }

    private static func firstIndex(of needle: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        var index = start
        while index + needle.count <= bytes.count {
            if bytes[index..<index + needle.count].elementsEqual(needle) {
                return index
            }
            index += 1
        }
        return nil
    }

    #if canImport(Glibc)
    private static let socketStream = Int32(SOCK_STREAM.rawValue)
    #else
    private static let socketStream = SOCK_STREAM
    #endif
}

/// Writes all of `bytes`; outside `LoopbackHTTP` so that `send` is the system call.
private func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    #if canImport(Glibc)
    let noSignal = Int32(MSG_NOSIGNAL)
    #else
    let noSignal: Int32 = 0
    #endif
    var sent = 0
    while sent < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, noSignal) }
        guard n > 0 else { throw LoopbackHTTPError(description: "send: errno \(errno)") }
        sent += n
    }
}
