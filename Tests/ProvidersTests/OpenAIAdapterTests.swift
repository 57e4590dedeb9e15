import Foundation
import Providers
import Testing

@Suite struct OpenAIAdapterTests {
    let adapter = OpenAIAdapter(baseURL: "https://api.openai.com/v1/")

    func request(_ json: String) throws -> ChatRequest {
        try ChatRequest(json: Array(json.utf8))
    }

    func object(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test func requestKeepsEveryFieldAndSetsTheTargetModel() throws {
        let canonical = try request("""
            {"model":"whatever-the-app-said","messages":[{"role":"system","content":"Be brief."},
             {"role":"user","content":[{"type":"text","text":"What is in this image?"},
              {"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}],
             "temperature":0.2,"max_tokens":16,"stop":["\\n"],
             "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}
            """)
        let http = adapter.makeRequest(canonical, model: "gpt-4o-mini", apiKey: "sk-test")
        #expect(http.url == "https://api.openai.com/v1/chat/completions")
        #expect(http.headers.contains { $0.name == "Authorization" && $0.value == "Bearer sk-test" })
        #expect(http.headers.contains { $0.name == "Content-Type" && $0.value == "application/json" })
        let body = try object(http.body)
        #expect(body["model"] as? String == "gpt-4o-mini")
        #expect(body["temperature"] as? Double == 0.2)
        #expect(body["max_tokens"] as? Int == 16)
        #expect((body["tools"] as? [Any])?.count == 1)
        #expect((body["messages"] as? [Any])?.count == 2)
        #expect(body["stream_options"] == nil)
        // Integers stay integers on the wire.
        #expect(String(decoding: http.body, as: UTF8.self).contains("\"max_tokens\":16"))
    }

    @Test func streamedRequestAsksForUsage() throws {
        let canonical = try request(#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#)
        let body = try object(adapter.makeRequest(canonical, model: "m", apiKey: nil).body)
        #expect(body["stream"] as? Bool == true)
        #expect((body["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)
    }

    @Test(arguments: [
        ("not json", "not valid JSON"),
        ("[1,2]", "must be a JSON object"),
        (#"{"model":"x"}"#, "\"messages\" array"),
        (#"{"messages":[]}"#, "must not be empty"),
        (#"{"messages":[{"content":"no role"}]}"#, "no \"role\""),
    ])
    func unusableRequestsAreRefused(json: String, message: String) {
        #expect { try ChatRequest(json: Array(json.utf8)) } throws: {
            let e = $0 as! ProviderError
            return e.kind == .badRequest && e.message.contains(message)
        }
    }

    @Test func completionUsageIsRead() throws {
        let body = """
            {"id":"chatcmpl-123","object":"chat.completion","created":1677652288,"model":"gpt-4o-mini",
             "system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"message":{"role":"assistant",
             "content":"Hello there, how may I assist you today?"},"logprobs":null,"finish_reason":"stop"}],
             "usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}
            """
        let usage = try adapter.parseResponse(status: 200, body: Array(body.utf8))
        #expect(usage == Usage(promptTokens: 9, completionTokens: 12, totalTokens: 21))
    }

    @Test func errorBodyGivesStatusAndCodeButNotTheProviderMessage() {
        let body = """
            {"error":{"message":"Incorrect API key provided: sk-abc***xyz. You can find your API key at ...",
             "type":"invalid_request_error","param":null,"code":"invalid_api_key"}}
            """
        #expect { try adapter.parseResponse(status: 401, body: Array(body.utf8)) } throws: {
            let e = $0 as! ProviderError
            return e.kind == .upstreamStatus(401) && e.providerCode == "invalid_api_key"
                && !e.message.contains("sk-abc") && e.message.contains("401")
        }
    }

    @Test func malformedSuccessBodyIsReported() {
        #expect { try adapter.parseResponse(status: 200, body: Array(#"{"id": "chatcmpl-1", "choi"#.utf8)) } throws: {
            ($0 as! ProviderError).kind == .malformedResponse
        }
    }

    @Test func streamEvents() {
        let chunk = #"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#
        #expect(adapter.parseStreamEvent(SSEEvent(data: chunk)) == .chunk(Array(chunk.utf8), usage: nil))
        let usage = #"{"id":"c","object":"chat.completion.chunk","choices":[],"#
            + #""usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#
        #expect(adapter.parseStreamEvent(SSEEvent(data: usage))
            == .chunk(Array(usage.utf8), usage: Usage(promptTokens: 3, completionTokens: 2, totalTokens: 5)))
        #expect(adapter.parseStreamEvent(SSEEvent(data: "[DONE]")) == .done)
        guard case .error(let e) = adapter.parseStreamEvent(
            SSEEvent(data: #"{"error":{"message":"overloaded","type":"server_error","code":null}}"#)) else {
            Issue.record("error event not recognised")
            return
        }
        #expect(e.providerCode == "server_error")
        guard case .error(let m) = adapter.parseStreamEvent(SSEEvent(data: "{\"id\":")) else {
            Issue.record("malformed event not recognised")
            return
        }
        #expect(m.kind == .malformedResponse)
    }
}
