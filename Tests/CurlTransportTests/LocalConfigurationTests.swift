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

    private func expectNoSecrets(_ error: TransportError, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!error.detail.isEmpty, sourceLocation: sourceLocation)
        for text in [error.detail, error.description] {
            for secret in Self.secrets {
                #expect(!text.contains(secret), "\(secret) in \(text)", sourceLocation: sourceLocation)
            }
        }
    }
}
