import CHiredis
import Resilience

/// A Redis reply, copied out of hiredis' reply tree.
public enum RedisReply: Sendable, Equatable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case null
    case array([RedisReply])
    /// The server refused the command (`-ERR ...`, `-NOSCRIPT ...`).
    case error(String)

    /// An integer reply, or a string reply holding one.
    public var int: Int64? {
        switch self {
        case .integer(let n): n
        case .string(let b): Int64(String(decoding: b, as: UTF8.self))
        default: nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }
}

/// Why a Redis command did not get an answer. The texts name the store and the failure, never a password or any
/// data sent.
public enum RedisFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// No connection: refused, no such socket, the name did not resolve, or the connect timed out.
    case unreachable(String)
    /// Connected, but the command's answer did not come within the timeout, or the connection broke.
    case io(String)
    /// The server answered with an error (`-ERR`, `-NOAUTH`, `-WRONGPASS`...).
    case server(String)
    /// The answer was not of the shape the script returns.
    case unexpected(String)

    public var description: String {
        switch self {
        case .unreachable(let why): "cannot connect to the cluster store: \(why)"
        case .io(let why): "the cluster store did not answer: \(why)"
        case .server(let why): "the cluster store refused a command: \(why)"
        case .unexpected(let why): "the cluster store gave an unexpected answer: \(why)"
        }
    }
}

/// Where the cluster store is: `redis://host:port/db` or a Unix socket (`unix:///run/redis/redis.sock`).
public enum RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int, database: Int)
    case unix(path: String, database: Int)

    public var description: String {
        switch self {
        case .tcp(let host, let port, let db): "redis://\(host):\(port)/\(db)"
        case .unix(let path, let db): "unix://\(path)" + (db == 0 ? "" : "?db=\(db)")
        }
    }

    /// Why `text` is not an endpoint this build can use; nil when it is one (`parse` then returns it).
    public static func problem(_ text: String) -> String? {
        if case .failure(let why) = parse(text) { return why.message }
        return nil
    }

    public static func parse(_ text: String) -> Result<RedisEndpoint, EndpointError> {
        if text.hasPrefix("rediss://") {
            // hiredis gained TLS (hiredis_ssl) in 1.0; Debian 12 ships 0.14.1 without it.
            return .failure(EndpointError("rediss:// (TLS) needs hiredis 1.0 or later with hiredis_ssl; this build "
                + "links Debian 12's hiredis 0.14, which has no TLS: reach a TLS Redis through a local TLS tunnel "
                + "(stunnel) on loopback or a Unix socket"))
        }
        if text.hasPrefix("unix://") || text.hasPrefix("unix:/") {
            var rest = Substring(text.dropFirst(text.hasPrefix("unix://") ? 7 : 5))
            var db = 0
            if let q = rest.firstIndex(of: "?") {
                let query = rest[rest.index(after: q)...]
                rest = rest[..<q]
                guard query.hasPrefix("db="), let n = Int(query.dropFirst(3)), n >= 0 else {
                    return .failure(EndpointError("a unix:// cluster store takes only ?db=N after the path"))
                }
                db = n
            }
            guard rest.hasPrefix("/") else {
                return .failure(EndpointError("a unix:// cluster store needs an absolute socket path, like "
                    + "unix:///run/redis/redis.sock"))
            }
            return .success(.unix(path: String(rest), database: db))
        }
        guard text.hasPrefix("redis://") else {
            return .failure(EndpointError("the cluster store must be redis://HOST:PORT[/DB] or unix:///PATH"))
        }
        var rest = Substring(text.dropFirst(8))
        if rest.contains("@") {
            // Deliberately not echoed: it holds a password.
            return .failure(EndpointError("the cluster store's URL must not hold a user or password; give the "
                + "password as a credential (cluster.password_credential)"))
        }
        var db = 0
        if let slash = rest.firstIndex(of: "/") {
            let tail = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !tail.isEmpty {
                guard let n = Int(tail), n >= 0 else {
                    return .failure(EndpointError("the cluster store's database must be a number ≥ 0"))
                }
                db = n
            }
        }
        var host = String(rest)
        var port = 6379
        if host.hasPrefix("[") {  // [::1]:6379
            guard let close = host.firstIndex(of: "]") else {
                return .failure(EndpointError("the cluster store's IPv6 address needs its closing ]"))
            }
            let after = host[host.index(after: close)...]
            let address = String(host[host.index(after: host.startIndex)..<close])
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                    return .failure(EndpointError("the cluster store's port must be 1–65535"))
                }
                port = p
            }
            host = address
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]), (1...65535).contains(p) else {
                return .failure(EndpointError("the cluster store's port must be 1–65535"))
            }
            port = p
            host = String(host[..<colon])
        }
        guard !host.isEmpty else { return .failure(EndpointError("the cluster store's URL needs a host")) }
        return .success(.tcp(host: host, port: port, database: db))
    }

    public struct EndpointError: Error, Sendable, Equatable {
        public let message: String
        init(_ message: String) { self.message = message }
    }
}

/// One blocking connection to Redis through hiredis, used from one thread only (the fleet client's). Every
/// connect, read and write gives up after the timeout; after any failure the connection is dropped and the next
/// command connects again (hiredis leaves a failed context unusable).
final class RedisConnection {
    private let endpoint: RedisEndpoint
    private let password: String?
    private let timeoutMilliseconds: Int
    private var context: UnsafeMutablePointer<redisContext>?

    init(endpoint: RedisEndpoint, password: String?, timeout: Duration) {
        self.endpoint = endpoint
        self.password = password
        timeoutMilliseconds = max(1, Int(timeout.nanoseconds / 1_000_000))
    }

    deinit { disconnect() }

    func disconnect() {
        if let context { redisFree(context) }
        context = nil
    }

    /// Runs one command, connecting first if need be. A server error is a reply (`.error`), not a failure, except
    /// while authenticating.
    func command(_ arguments: [[UInt8]]) -> Result<RedisReply, RedisFailure> {
        if context == nil, case .failure(let failure) = connect() { return .failure(failure) }
        guard let context else { return .failure(.unreachable("not connected")) }
        let reply = Self.send(context, arguments)
        if case .failure = reply { disconnect() }
        return reply
    }

    private func connect() -> Result<Void, RedisFailure> {
        let c: UnsafeMutablePointer<redisContext>?
        let database: Int
        switch endpoint {
        case .tcp(let host, let port, let db):
            c = bw_redis_connect_tcp(host, Int32(port), timeoutMilliseconds)
            database = db
        case .unix(let path, let db):
            c = bw_redis_connect_unix(path, timeoutMilliseconds)
            database = db
        }
        guard let c else { return .failure(.unreachable("out of memory")) }
        if bw_redis_error(c) != 0 {
            let why = String(cString: bw_redis_error_text(c))
            redisFree(c)
            return .failure(.unreachable("\(endpoint): \(why)"))
        }
        _ = bw_redis_set_timeout(c, timeoutMilliseconds)
        var setup: [[[UInt8]]] = []
        if let password { setup.append([Array("AUTH".utf8), Array(password.utf8)]) }
        if database != 0 { setup.append([Array("SELECT".utf8), Array(String(database).utf8)]) }
        for step in setup {
            switch Self.send(c, step) {
            case .success(.error(let why)):
                redisFree(c)
                // The server's text (e.g. "WRONGPASS invalid username-password pair") names no secret.
                return .failure(.server(step[0] == Array("AUTH".utf8) ? "AUTH: \(why)" : "SELECT: \(why)"))
            case .failure(let failure):
                redisFree(c)
                return .failure(failure)
            case .success:
                continue
            }
        }
        context = c
        return .success(())
    }

    private static func send(_ c: UnsafeMutablePointer<redisContext>, _ arguments: [[UInt8]])
        -> Result<RedisReply, RedisFailure> {
        // hiredis copies the arguments into its output buffer before returning, so the pointers need only live
        // for the call.
        let lengths = arguments.map { $0.count }
        let copies = arguments.map { bytes -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
            bytes.withUnsafeBufferPointer { b in
                if let base = b.baseAddress {
                    base.withMemoryRebound(to: CChar.self, capacity: bytes.count) { p.update(from: $0, count: bytes.count) }
                }
            }
            return p
        }
        defer { copies.forEach { $0.deallocate() } }
        var argv = copies.map { UnsafePointer<CChar>?(UnsafePointer($0)) }
        let reply = argv.withUnsafeMutableBufferPointer { a in
            lengths.withUnsafeBufferPointer { l in
                bw_redis_command(c, Int32(arguments.count), a.baseAddress, l.baseAddress)
            }
        }
        guard let reply else {
            let why = String(cString: bw_redis_error_text(c))
            return .failure(.io(why.isEmpty ? "connection lost" : why))
        }
        defer { freeReplyObject(reply) }
        return .success(copy(reply))
    }

    private static func copy(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        func text() -> String {
            guard let s = reply.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: s, count: Int(reply.len)), as: UTF8.self)
        }
        switch reply.type {
        case REDIS_REPLY_STRING:
            guard let s = reply.str else { return .string([]) }
            return .string(Array(UnsafeRawBufferPointer(start: s, count: Int(reply.len))))
        case REDIS_REPLY_STATUS: return .status(text())
        case REDIS_REPLY_ERROR: return .error(text())
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_ARRAY:
            return .array((0..<Int(reply.elements)).map { i in
                bw_redis_element(r, i).map(copy) ?? .null
            })
        default: return .null
        }
    }
}
