import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// HTTP/2 upstream: breakwaterd → (libcurl, h2c prior knowledge) → nghttpx, a real HTTP/2 server from nghttp2 →
/// the fake provider. nghttpx's access log records the protocol each request arrived with.
@Suite(.serialized, .timeLimit(.minutes(2))) struct HTTP2Tests {
    /// A free loopback port: bind port 0, read it, close (nghttpx binds it right after).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { throw TestFailure("cannot find a free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs nghttpx in front of a fake provider, then 20 concurrent plain calls, one streamed call, and a long
    /// answer plain and streamed through the daemon; returns nghttpx's access log lines
    /// (`$alpn $remote_port $status $method $path`).
    func run(tls: Bool) async throws -> [Substring] {
        let nghttpx = "/usr/sbin/nghttpx"
        try #require(FileManager.default.isExecutableFile(atPath: nghttpx), "install nghttp2-proxy (scripts/setup.sh)")
        let fake = try await FakeProvider.start()
        defer { Task { try? await fake.shutdown() } }
        let dir = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try Self.freePort()
        let accessLog = dir + "/access.log"
        var frontend = "--frontend=127.0.0.1,\(port);no-tls"
        var tlsArgs: [String] = []
        if tls {
            let openssl = try ChildProcess("/usr/bin/openssl", [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
            ], logPath: dir + "/openssl.log")
            #expect(try await openssl.waitForExit() == 0, "\(openssl.output)")
            frontend = "--frontend=127.0.0.1,\(port)"
            tlsArgs = [dir + "/key.pem", dir + "/cert.pem"]
        }
        let proxy = try ChildProcess(nghttpx, [
            frontend, "--backend=127.0.0.1,\(fake.port)", "--workers=1", "--no-ocsp",
            "--accesslog-file=\(accessLog)", "--accesslog-format=$alpn $remote_port $status $method $path",
            "--errorlog-file=\(dir)/nghttpx.err",
        ] + tlsArgs, logPath: dir + "/nghttpx.out")
        defer { proxy.stop() }
        #expect(try await waitUntil { (try? RawTCP.connect(port: port)) == true })

        let scheme = tls ? "https" : "http"
        let d = try await DaemonUnderTest.start(providerBlock: """
              fake:
                kind: openai
                base_url: \(scheme)://127.0.0.1:\(port)/v1
                api_key_env: BW_TEST_KEY
                http_version: "\(tls ? "2" : "2-prior-knowledge")"
            \(tls ? "    ca_file: \(dir)/cert.pem" : "")
            """)
        defer { d.stop() }
        let client = d.client()
        let answers = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<20 {
                group.addTask {
                    let r = try await client.send(route: "default", body: chat("h2 \(i)"))
                    return content(r.body) == "Echo: h2 \(i)"
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(answers == 20)
        let s = try await client.stream(route: "default", body: chat("streamed over h2"))
        var text = ""
        for try await chunk in s { text += content(chunk) ?? "" }
        #expect(text == "Echo: streamed over h2")
        // Answers larger than a receive buffer, most of each arriving in one read of the connection: libcurl 7.88
        // stalled such an answer at its end until the idle limit when the buffer was smaller than the read
        // (`HTTPRequest.http2ReceiveBufferBytes`).
        let long = String(repeating: "words ", count: 2_000)
        let big = try await client.send(route: "default", body: chat(long))
        #expect(content(big.body) == "Echo: " + long)
        var streamed = ""
        for try await chunk in try await client.stream(route: "default", body: chat(long)) {
            streamed += content(chunk) ?? ""
        }
        #expect(streamed == "Echo: " + long)

        func lines() -> [Substring] {
            ((try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? "").split(separator: "\n")
        }
        #expect(try await waitUntil { lines().count >= 23 })
        let logged = lines()
        #expect(logged.count == 23)
        #expect(logged.allSatisfy { $0.contains(" 200 POST /v1/chat/completions") }, "\(logged)")
        return logged
    }

    /// h2c with prior knowledge. On libcurl before 8.0 each call gets its own connection (see CurlGlobal.swift).
    @Test func callsTravelOverH2CPriorKnowledge() async throws {
        let logged = try await run(tls: false)
        #expect(logged.allSatisfy { $0.hasPrefix("h2c ") }, "\(logged)")
    }

    /// HTTP/2 negotiated by ALPN over TLS, as real providers speak it: every call is multiplexed on a single
    /// connection (one client port in nghttpx's log).
    @Test func callsTravelOverHTTP2WithTLSOnOneConnection() async throws {
        let logged = try await run(tls: true)
        #expect(logged.allSatisfy { $0.hasPrefix("h2 ") }, "\(logged)")
        let ports = Set(logged.map { $0.split(separator: " ")[1] })
        #expect(ports.count == 1, "calls used \(ports.count) connections: \(ports)")
    }
}

enum RawTCP {
    static func connect(port: Int) throws -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
