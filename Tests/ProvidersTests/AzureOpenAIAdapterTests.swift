import Foundation
import Providers
import Testing

@Suite struct AzureOpenAIAdapterTests {
    let adapter = AzureOpenAIAdapter(baseURL: "https://contoso.openai.azure.com/")

    @Test func requestGoesToTheDeploymentWithTheAPIKeyHeader() throws {
        let canonical = try Translation.request("""
            {"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"temperature":0.2,
             "tools":[{"type":"function","function":{"name":"now","parameters":{"type":"object"}}}]}
            """, stream: true)
        let http = adapter.makeRequest(canonical, model: "gpt4o-prod", apiKey: "azure-key")
        #expect(http.url
            == "https://contoso.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
        #expect(Translation.header(http, "api-key") == "azure-key")
        #expect(Translation.header(http, "authorization") == nil)
        #expect(!http.url.contains("azure-key"))
        // OpenAI's body, as OpenAIAdapter builds it.
        let body = try Translation.object(http.body)
        #expect(body["model"] as? String == "gpt4o-prod")
        #expect(body["temperature"] as? Double == 0.2)
        #expect((body["tools"] as? [Any])?.count == 1)
        #expect((body["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)

        let other = AzureOpenAIAdapter(baseURL: "https://contoso.openai.azure.com", apiVersion: "2025-04-01-preview")
        #expect(other.makeRequest(canonical, model: "a/b", apiKey: nil).url == "https://contoso.openai.azure.com"
            + "/openai/deployments/a%2Fb/chat/completions?api-version=2025-04-01-preview")
    }

    /// A non-streamed answer as Azure sends it, with its content-filter annotations (Azure OpenAI REST reference,
    /// "Chat completions" response example).
    @Test func answerPassesThroughWithItsUsage() throws {
        let body = """
            {"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},
              "finish_reason":"stop","index":0,"message":{"content":"Hello! How can I help?","role":"assistant"}}],
             "created":1724860848,"id":"chatcmpl-A1Fp8cA8b1bPfwIoxeBEfM5lHZe5r","model":"gpt-4o-2024-05-13",
             "object":"chat.completion","prompt_filter_results":[{"prompt_index":0,
              "content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],
             "system_fingerprint":"fp_abc28019ad","usage":{"completion_tokens":7,"prompt_tokens":9,"total_tokens":16}}
            """
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "gpt4o-prod")
        #expect(parsed.body == Array(body.utf8))
        #expect(parsed.usage == Usage(promptTokens: 9, completionTokens: 7, totalTokens: 16))
    }

    /// Azure's error bodies are OpenAI-shaped, with the HTTP status as a string code (microsoft/copilot-camp#551,
    /// jasonacox/TinyLLM#17) or a named code (`DeploymentNotFound`, `content_filter`).
    @Test(arguments: [
        (429, #"{"error":{"code":"429","message":"Rate limit is exceeded. Try again in 2 seconds."}}"#, "429"),
        (429, #"{"error":{"code":429,"message":"Requests to the ChatCompletions_Create Operation have exceeded"}}"#,
         "429"),
        (404, #"{"error":{"code":"DeploymentNotFound","#
            + #""message":"The API deployment for this resource does not exist."}}"#, "DeploymentNotFound"),
        (400, #"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's "#
            + #"content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#,
         "content_filter"),
    ])
    func errorBodies(status: Int, body: String, code: String) {
        let error = adapter.error(status: status, body: Array(body.utf8))
        #expect(error.kind == .upstreamStatus(status))
        #expect(error.providerCode == code)
        #expect(!error.message.contains("exceeded") && !error.message.contains("filtered"))
        #expect(throws: error) { try adapter.parseResponse(status: status, body: Array(body.utf8), model: "d") }
    }

    /// "Sample response stream (passes filters)" of Azure's content filter streaming guide
    /// (MicrosoftDocs/azure-ai-docs `articles/ai-services/openai/concepts/content-filter-streaming.md`), with the
    /// usage chunk `stream_options.include_usage` adds.
    static let stream = """
        data: {"id":"","object":"","created":0,"model":"","prompt_filter_results":[{"prompt_index":0,\
        "content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,\
        "severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,\
        "severity":"safe"}}}],"choices":[],"usage":null}

        data: {"id":"chatcmpl-7rCNsVeZy0PGnX3H6jK8STps5nZUY","object":"chat.completion.chunk","created":1692913344,\
        "model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"role":"assistant"}}],"usage":null}

        data: {"id":"chatcmpl-7rCNsVeZy0PGnX3H6jK8STps5nZUY","object":"chat.completion.chunk","created":1692913344,\
        "model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"content":"Color"}}],"usage":null}

        data: {"id":"chatcmpl-7rCNsVeZy0PGnX3H6jK8STps5nZUY","object":"chat.completion.chunk","created":1692913344,\
        "model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"content":" is"}}],"usage":null}

        data: {"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":null,\
        "content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,\
        "severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,\
        "severity":"safe"}},"content_filter_offsets":{"check_offset":44,"start_offset":44,"end_offset":198}}],\
        "usage":null}

        data: {"id":"chatcmpl-7rCNsVeZy0PGnX3H6jK8STps5nZUY","object":"chat.completion.chunk","created":1692913344,\
        "model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":"stop","delta":{}}],"usage":null}

        data: {"id":"chatcmpl-7rCNsVeZy0PGnX3H6jK8STps5nZUY","object":"chat.completion.chunk","created":1692913344,\
        "model":"gpt-35-turbo","choices":[],"usage":{"completion_tokens":12,"prompt_tokens":11,"total_tokens":23}}

        data: [DONE]


        """

    @Test func streamDropsAnnotationEventsOnly() throws {
        let pieces = Translation.run(adapter, sse: Self.stream)
        #expect(pieces.last == .done)
        let chunks = try Translation.chunks(pieces)
        #expect(chunks.count == 5)
        #expect(chunks.allSatisfy { $0["id"] as? String == "chatcmpl-7rCNsVeZy0PGnX3H6jK8STps5nZUY" })
        #expect(Translation.text(chunks) == "Color is")
        #expect(Translation.finishReasons(chunks) == ["stop"])
        #expect(Translation.usages(pieces) == [Usage(promptTokens: 11, completionTokens: 12, totalTokens: 23)])
    }

    /// The same guide's "blocked by filters" ending: the filter's verdict must reach the app.
    @Test func contentFilterVerdictPasses() throws {
        let sse = """
            data: {"id":"chatcmpl-8JCbt5d4luUIhYCI7YH4dQK7hnHx2","object":"chat.completion.chunk","created":1699587397,\
            "model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"content":"Hey"}}],"usage":null}

            data: {"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":"content_filter",\
            "content_filter_results":{"protected_material_text":{"detected":true,"filtered":true}},\
            "content_filter_offsets":{"check_offset":65,"start_offset":65,"end_offset":1056}}],"usage":null}

            data: [DONE]


            """
        let pieces = Translation.run(adapter, sse: sse)
        #expect(Translation.finishReasons(try Translation.chunks(pieces)) == ["content_filter"])
        #expect(pieces.last == .done)
    }

    @Test func cutStreamIsNotDone() {
        let cut = Self.stream.components(separatedBy: "data: [DONE]")[0]
        #expect(!Translation.run(adapter, sse: cut).contains(.done))
    }
}
