import CurlTransport
import Foundation
import Testing

/// Failures that are this host's own doing must be `.localConfiguration`, so the daemon neither retries them nor
/// blames the provider; failures libcurl reports with the same codes about a provider's reply must not be.
@Suite("CurlEngine tells this host's configuration failures apart from the provider's")
struct LocalConfigurationTests {
    /// What the requests below carry that must never show up in an error: a key in a header, a key in the URL
    /// query (Gemini's style) and a prompt.
    static let secrets = ["sk-header-secret", "sk-query-secret", "secret prompt"]
    static let secretHeaders = [HTTPHeader(name: "Authorization", value: "Bearer sk-header-secret")]
    static let secretBody = Array("my secret prompt".utf8)

    @Test(
        "a ca_file that is missing or not PEM is localConfiguration with curl code 77, before any request",
        arguments: ["missing", "not PEM"]
    )
    func badCAFile(problem: String) async throws {
        let server = try LoopbackServer { _ in .respond(status: 200) }
        defer { server.stop() }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("breakwater-ca-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let caFile = directory.appendingPathComponent("ca.pem").path
        if problem == "not PEM" {
            try Data("this is not a certificate\n".utf8).write(to: URL(fileURLWithPath: caFile))
        }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        // libcurl loads the CA file once the TCP connection is up and before the TLS handshake, so the
        // loopback server (which does not speak TLS) is never sent a byte.
        let delegate = RecordingDelegate()
        engine.start(
            HTTPRequest(
                method: "POST",
                url: "https://127.0.0.1:\(server.port)/v1/models/m:generate?key=sk-query-secret",
                headers: Self.secretHeaders,
                body: Self.secretBody,
                caFile: caFile
            ),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        #expect(error.kind == .localConfiguration)
        #expect(error.curlCode == 77)
        #expect(error.detail.contains(caFile), "the detail should say which file to fix: \(error.detail)")
        expectNoSecrets(error)
        #expect(delegate.snapshot.heads == 0)
        #expect(server.requests.isEmpty)
    }

    @Test(
        "a header name or value with CR, LF or NUL is refused before libcurl sees it, naming the header only",
        arguments: [
            HTTPHeader(name: "Authorization", value: "Bearer sk-header-secret\r\nX-Evil: 1"),
            HTTPHeader(name: "Authorization", value: "Bearer sk-header-secret\nX-Evil: 1"),
            HTTPHeader(name: "Authorization", value: "Bearer sk-header-secret\u{0}X-Evil: 1"),
            HTTPHeader(name: "Authorization: Bearer sk-header-secret\r\nX-Evil", value: "1"),
        ]
    )
    func headerInjectionIsRefused(header: HTTPHeader) async throws {
        let server = try LoopbackServer { _ in .respond(status: 200) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(
            HTTPRequest(
                method: "POST",
                url: server.baseURL + "/v1/chat/completions?key=sk-query-secret",
                headers: [HTTPHeader(name: "Content-Type", value: "application/json"), header],
                body: Self.secretBody
            ),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        #expect(error.kind == .localConfiguration)
        #expect(error.curlCode == nil)
        expectNoSecrets(error)
        for text in [error.detail, error.description] {
            #expect(!text.contains("X-Evil"))
            #expect(!text.contains("\r") && !text.contains("\n") && !text.contains("\u{0}"))
        }
        if header.name == "Authorization" {
            #expect(error.detail.contains("\"Authorization\""), "the detail should name the header: \(error.detail)")
        } else {
            #expect(error.detail.contains("#2"), "the detail should say which header: \(error.detail)")
        }
        #expect(engine.activeTransfers == 0)
        // Refused before the transfer was handed to libcurl: not even a connection was opened.
        #expect(server.connectionsAccepted == 0)
        #expect(server.requests.isEmpty)
    }

    @Test(
        "a scheme libcurl does not speak, or one the engine does not allow, is localConfiguration with code 1",
        arguments: ["gopherx", "ftp", "file"]
    )
    func unsupportedScheme(scheme: String) async throws {
        let server = try LoopbackServer { _ in .respond(status: 200) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        let url = scheme == "file"
            ? "file:///etc/hostname?key=sk-query-secret"
            : "\(scheme)://127.0.0.1:\(server.port)/v1?key=sk-query-secret"
        engine.start(
            HTTPRequest(method: "POST", url: url, headers: Self.secretHeaders, body: Self.secretBody),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        #expect(error.kind == .localConfiguration)
        #expect(error.curlCode == 1)
        expectNoSecrets(error)
        #expect(server.connectionsAccepted == 0)
    }

    @Test(
        "a malformed URL is localConfiguration with code 3 and does not quote the URL",
        arguments: [
            "http://127.0.0.1:99999/v1?key=sk-query-secret",
            "http://127.0.0.1 /v1?key=sk-query-secret",
            "://127.0.0.1/v1?key=sk-query-secret",
        ]
    )
    func malformedURL(url: String) async throws {
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(
            HTTPRequest(method: "POST", url: url, headers: Self.secretHeaders, body: Self.secretBody),
            delegate: delegate
        )

        let error = try #require(await delegate.failure())
        #expect(error.kind == .localConfiguration)
        #expect(error.curlCode == 3)
        expectNoSecrets(error)
    }

    @Test("a method that is not an HTTP token is localConfiguration and reaches no server")
    func invalidMethod() async throws {
        let server = try LoopbackServer { _ in .respond(status: 200) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(HTTPRequest(method: "GET /x HTTP/1.1\r\n", url: server.baseURL + "/"), delegate: delegate)

        let error = try #require(await delegate.failure())
        #expect(error.kind == .localConfiguration)
        #expect(server.connectionsAccepted == 0)
    }

    /// Replies libcurl 7.88 reports with UNSUPPORTED_PROTOCOL or OUT_OF_MEMORY: the same codes as a scheme it
    /// does not speak or a host out of memory. (Cases rather than bytes, so a failure does not print 150 kB.)
    enum UnreadableReply: String, CaseIterable, Sendable {
        case noStatusLine = "no status line (HTTP/0.9)"
        case unknownVersion = "an unknown HTTP version"
        case hugeHeaderLine = "a header line over 100 KiB"

        var bytes: [UInt8] {
            switch self {
            case .noStatusLine:
                Array("garbage\r\n\r\n".utf8)
            case .unknownVersion:
                Array("HTTP/1.7 200 OK\r\nContent-Length: 0\r\n\r\n".utf8)
            case .hugeHeaderLine:
                Array("HTTP/1.1 200 OK\r\nX-Big: \(String(repeating: "a", count: 150_000))\r\n".utf8)
                    + Array("Content-Length: 2\r\n\r\nok".utf8)
            }
        }

        var curlCode: Int32 {
            self == .hugeHeaderLine ? 27 : 1
        }
    }

    @Test(
        "a reply libcurl will not read is malformedResponse, though libcurl reports it with a 'local' code",
        arguments: UnreadableReply.allCases
    )
    func unreadableReplyIsTheProviders(reply: UnreadableReply) async throws {
        let server = try LoopbackServer { _ in .raw(reply.bytes) }
        defer { server.stop() }
        let engine = try CurlEngine()
        defer { engine.shutdown() }

        let delegate = RecordingDelegate()
        engine.start(HTTPRequest(method: "POST", url: server.baseURL + "/v1/chat/completions"), delegate: delegate)

        let error = try #require(await delegate.failure())
        #expect(error.curlCode == reply.curlCode, "\(error)")
        #expect(error.kind == .malformedResponse, "\(error)")
        #expect(server.requests.count == 1)
    }

    private func expectNoSecrets(_ error: TransportError, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!error.detail.isEmpty, sourceLocation: sourceLocation)
        for text in [error.detail, error.description] {
            for secret in Self.secrets {
                #expect(!text.contains(secret), "\(secret) in \(text)", sourceLocation: sourceLocation)
            }
        }
    }
}
