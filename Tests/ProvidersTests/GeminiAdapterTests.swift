import Foundation
import Providers
import Testing

@Suite struct GeminiAdapterTests {
    let adapter = GeminiAdapter(baseURL: "https://generativelanguage.googleapis.com/v1beta/")

    // MARK: - Request

    static let toolConversation = """
        {"model":"gpt-4o","messages":[
          {"role":"system","content":"You are a weather bot."},
          {"role":"user","content":[{"type":"text","text":"Compare these skies."},
            {"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}},
            {"type":"image_url","image_url":{"url":"https://example.com/sky.png?size=large"}}]},
          {"role":"assistant","content":null,"tool_calls":[
            {"id":"call_a","type":"function","function":{"name":"get_weather",\
        "arguments":"{\\"location\\":\\"Paris\\"}"},
             "extra_content":{"google":{"thought_signature":"CiIBVKhc7vB+"}}},
            {"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]},
          {"role":"tool","tool_call_id":"call_a","content":"{\\"temp\\":18,\\"sky\\":\\"clear\\"}"},
          {"role":"tool","tool_call_id":"call_b","content":"10:42"},
          {"role":"user","content":"Which is warmer?"}],
         "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather for a city",
           "parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],
           "additionalProperties":false}}},
          {"type":"function","function":{"name":"get_time"}}],
         "tool_choice":{"type":"function","function":{"name":"get_weather"}},
         "max_tokens":256,"temperature":0.2,"top_p":0.95,"stop":["END"],"seed":42,
         "response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"}}}}
        """

    @Test func requestURLAndKeyHeader() throws {
        let canonical = try Translation.request(#"{"messages":[{"role":"user","content":"Hi"}]}"#)
        let plain = try adapter.makeRequest(canonical, model: "gemini-2.5-flash", apiKey: "AIza-secret")
        #expect(plain.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent")
        #expect(Translation.header(plain, "x-goog-api-key") == "AIza-secret")
        #expect(Translation.header(plain, "content-type") == "application/json")
        #expect(!plain.url.contains("AIza") && !plain.url.contains("key="))

        let streamedRequest = try Translation.request(#"{"messages":[{"role":"user","content":"Hi"}]}"#, stream: true)
        let streamed = try adapter.makeRequest(streamedRequest, model: "models/gemini-2.5-flash", apiKey: "AIza-secret")
        #expect(streamed.url
            == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
        #expect(!streamed.url.contains("AIza"))
        // Names from config cannot reshape the URL.
        let odd = try adapter.makeRequest(canonical, model: "x?alt=json#y", apiKey: nil)
        #expect(odd.url == "https://generativelanguage.googleapis.com/v1beta/models/x%3Falt%3Djson%23y:generateContent")
        #expect(Translation.header(odd, "x-goog-api-key") == nil)
    }

    @Test func requestMapsEveryPartToGenerateContent() throws {
        let http = try adapter.makeRequest(Translation.request(Self.toolConversation), model: "gemini-2.5-pro",
                                           apiKey: "k")
        let body = try Translation.object(http.body)

        let system = try #require(body["systemInstruction"] as? [String: Any])
        #expect((system["parts"] as? [[String: Any]])?.map { $0["text"] as? String } == ["You are a weather bot."])

        let contents = try #require(body["contents"] as? [[String: Any]])
        #expect(contents.map { $0["role"] as? String } == ["user", "model", "user"])

        let user = try #require(contents[0]["parts"] as? [[String: Any]])
        #expect(user.count == 3)
        #expect(user[0]["text"] as? String == "Compare these skies.")
        #expect(user[1]["inlineData"] as? NSDictionary == ["mimeType": "image/jpeg", "data": "/9j/4AAQ"])
        #expect(user[2]["fileData"] as? NSDictionary
            == ["mimeType": "image/png", "fileUri": "https://example.com/sky.png?size=large"])

        let model = try #require(contents[1]["parts"] as? [[String: Any]])
        #expect(model.count == 2)
        #expect(model[0]["functionCall"] as? NSDictionary == ["name": "get_weather", "args": ["location": "Paris"]])
        #expect(model[0]["thoughtSignature"] as? String == "CiIBVKhc7vB+")
        #expect(model[1]["functionCall"] as? NSDictionary == ["name": "get_time", "args": [:] as NSDictionary])
        // Gemini 2.5 does not require signatures: none is made up.
        #expect(model[1]["thoughtSignature"] == nil)

        // Both results and the follow-up question in one user turn; results are matched to names by call id.
        let results = try #require(contents[2]["parts"] as? [[String: Any]])
        #expect(results.count == 3)
        #expect(results[0]["functionResponse"] as? NSDictionary
            == ["name": "get_weather", "response": ["temp": 18, "sky": "clear"]])
        #expect(results[1]["functionResponse"] as? NSDictionary
            == ["name": "get_time", "response": ["output": "10:42"]])
        #expect(results[2]["text"] as? String == "Which is warmer?")

        let tools = try #require(body["tools"] as? [[String: Any]])
        let declarations = try #require(tools.first?["functionDeclarations"] as? [[String: Any]])
        #expect(declarations.map { $0["name"] as? String } == ["get_weather", "get_time"])
        #expect(declarations[0]["description"] as? String == "Weather for a city")
        let schema = try #require(declarations[0]["parametersJsonSchema"] as? [String: Any])
        #expect(schema["additionalProperties"] as? Bool == false)
        #expect(declarations[1]["parametersJsonSchema"] == nil)
        #expect(body["toolConfig"] as? NSDictionary
            == ["functionCallingConfig": ["mode": "ANY", "allowedFunctionNames": ["get_weather"]]])

        let config = try #require(body["generationConfig"] as? [String: Any])
        #expect(config["maxOutputTokens"] as? Int == 256)
        #expect(config["temperature"] as? Double == 0.2)
        #expect(config["topP"] as? Double == 0.95)
        #expect(config["stopSequences"] as? [String] == ["END"])
        #expect(config["seed"] as? Int == 42)
        #expect(config["responseMimeType"] as? String == "application/json")
        #expect(config["responseJsonSchema"] as? NSDictionary == ["type": "object"])
        #expect(config["candidateCount"] == nil)
    }

    @Test func gemini3GetsTheDocumentedStandInForAMissingSignature() throws {
        // A history whose tool call came from another provider (no signature) replayed to Gemini 3.
        let canonical = try Translation.request("""
            {"messages":[{"role":"user","content":"Time?"},
              {"role":"assistant","tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"now",\
            "arguments":"{}"}}]},
              {"role":"tool","tool_call_id":"toolu_1","content":"10:42"}]}
            """)
        let body = try Translation.object(try adapter.makeRequest(canonical, model: "gemini-3-pro-preview",
                                                                  apiKey: nil).body)
        let model = try #require((body["contents"] as? [[String: Any]])?[1]["parts"] as? [[String: Any]])
        #expect(model.first?["thoughtSignature"] as? String == "skip_thought_signature_validator")
        #expect(body["generationConfig"] == nil)
        #expect(body["toolConfig"] == nil)
    }

    @Test(arguments: [(#""auto""#, "AUTO"), (#""none""#, "NONE"), (#""required""#, "ANY")])
    func toolChoiceModes(choice: String, mode: String) throws {
        let canonical = try Translation.request("""
            {"messages":[{"role":"user","content":"Hi"}],"tool_choice":\(choice),
             "tools":[{"type":"function","function":{"name":"now"}}]}
            """)
        let body = try Translation.object(try adapter.makeRequest(canonical, model: "g", apiKey: nil).body)
        #expect(body["toolConfig"] as? NSDictionary == ["functionCallingConfig": ["mode": mode]])
    }

    @Test func toolResultWithoutItsCallIsRefused() throws {
        let canonical = try Translation.request("""
            {"messages":[{"role":"user","content":"Hi"},{"role":"tool","tool_call_id":"call_gone","content":"x"}]}
            """)
        #expect { try adapter.makeRequest(canonical, model: "g", apiKey: nil) } throws: {
            ($0 as! ProviderError).kind == .badRequest
        }
    }

    // MARK: - Answer

    /// FirebaseExtended/vertexai-sdk-test-data `mock-responses/googleai/unary-success-basic-reply-short.txt`, the
    /// fixture set Google's Firebase AI SDKs test against.
    @Test func textAnswerBecomesAChatCompletion() throws {
        let body = """
            {"candidates":[{"content":{"parts":[{"text":"Google's headquarters, also known as the Googleplex,\
             is located in **Mountain View, California**.\\n"}],"role":"model"},
              "finishReason":"STOP","avgLogprobs":-0.048741644079034981}],
             "usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":22,"totalTokenCount":29,
              "promptTokensDetails":[{"modality":"TEXT","tokenCount":7}],
              "candidatesTokensDetails":[{"modality":"TEXT","tokenCount":22}]},
             "modelVersion":"gemini-2.0-flash"}
            """
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "route-model")
        #expect(parsed.usage == Usage(promptTokens: 7, completionTokens: 22, totalTokens: 29))
        let answer = try Translation.object(parsed.body)
        #expect(answer["object"] as? String == "chat.completion")
        #expect(answer["id"] as? String == "chatcmpl-gemini")
        #expect(answer["created"] as? Int == 0)
        #expect(answer["model"] as? String == "gemini-2.0-flash")
        let choice = try #require((answer["choices"] as? [[String: Any]])?.first)
        #expect(choice["finish_reason"] as? String == "stop")
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["role"] as? String == "assistant")
        #expect(message["content"] as? String
            == "Google's headquarters, also known as the Googleplex, is located in **Mountain View, California**.\n")
        let usage = try #require(answer["usage"] as? [String: Any])
        #expect(usage["prompt_tokens"] as? Int == 7)
        #expect(usage["completion_tokens"] as? Int == 22)
        #expect(usage["total_tokens"] as? Int == 29)
    }

    /// vertexai-sdk-test-data `mock-responses/googleai/unary-success-thinking-function-call-thought-summary-signature
    /// .json` (thought summary text and the signature shortened).
    @Test func functionCallWithThoughtsAndSignature() throws {
        let body = """
            {"candidates":[{"content":{"parts":[
                {"text":"**Thinking Through the New Year's Eve Calculation**\\n\\nOkay, so the user wants...",\
            "thought":true},
                {"functionCall":{"name":"now","args":{}},"thoughtSignature":"CtQOAVSoXO74PmYr9AFurEIJNTAtfagO"}],
              "role":"model"},"finishReason":"STOP","index":0}],
             "usageMetadata":{"promptTokenCount":38,"candidatesTokenCount":8,"totalTokenCount":547,
              "promptTokensDetails":[{"modality":"TEXT","tokenCount":38}],"thoughtsTokenCount":501},
             "modelVersion":"gemini-2.5-pro","responseId":"38CHaLjMG6TujrEPtvTiuQk"}
            """
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "m")
        // Thinking counts as completion tokens in OpenAI's usage, and is also reported on its own.
        #expect(parsed.usage == Usage(promptTokens: 38, completionTokens: 509, totalTokens: 547))
        let answer = try Translation.object(parsed.body)
        #expect(answer["id"] as? String == "38CHaLjMG6TujrEPtvTiuQk")
        let choice = try #require((answer["choices"] as? [[String: Any]])?.first)
        #expect(choice["finish_reason"] as? String == "tool_calls")
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["content"] is NSNull)  // the thought summary is not the answer
        let call = try #require((message["tool_calls"] as? [[String: Any]])?.first)
        #expect(call["id"] as? String == "call_38CHaLjMG6TujrEPtvTiuQk_0")
        #expect(call["function"] as? NSDictionary == ["name": "now", "arguments": "{}"])
        // Where Google's OpenAI-compatible API hands out the signature, so the next request carries it back.
        #expect(call["extra_content"] as? NSDictionary
            == ["google": ["thought_signature": "CtQOAVSoXO74PmYr9AFurEIJNTAtfagO"]])
        let usage = try #require(answer["usage"] as? [String: Any])
        #expect((usage["completion_tokens_details"] as? [String: Any])?["reasoning_tokens"] as? Int == 501)
    }

    /// vertexai-sdk-test-data `mock-responses/vertexai/unary-success-function-call-different-parallel-calls.json`.
    @Test func parallelFunctionCalls() throws {
        let body = """
            {"candidates":[{"content":{"parts":[
                {"functionCall":{"name":"sum","args":{"y":1,"x":2}}},
                {"functionCall":{"name":"multiply","args":{"y":3,"x":4}}},
                {"functionCall":{"name":"subtract","args":{"y":5,"x":6}}}],"role":"model"},
              "finishReason":"STOP","index":0}]}
            """
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "m")
        #expect(parsed.usage == nil)
        let message = (try Translation.object(parsed.body)["choices"] as? [[String: Any]])?.first?["message"]
        let calls = try #require((message as? [String: Any])?["tool_calls"] as? [[String: Any]])
        #expect(calls.map { $0["id"] as? String } == ["call_0", "call_1", "call_2"])
        #expect(calls.map { ($0["function"] as? [String: Any])?["name"] as? String } == ["sum", "multiply", "subtract"])
        // Arguments keep the provider's key order.
        #expect((calls[0]["function"] as? [String: Any])?["arguments"] as? String == #"{"y":1,"x":2}"#)
    }

    @Test(arguments: [
        ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"), ("OTHER", "stop"),
    ])
    func finishReasons(reason: String, expected: String) throws {
        let body = #"{"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"},"finishReason":"\#(reason)"}]}"#
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "m")
        let choice = (try Translation.object(parsed.body)["choices"] as? [[String: Any]])?.first
        #expect(choice?["finish_reason"] as? String == expected)
    }

    @Test func blockedPromptIsAContentFilterStop() throws {
        let body = #"{"promptFeedback":{"blockReason":"SAFETY"},"#
            + #""usageMetadata":{"promptTokenCount":9,"totalTokenCount":9}}"#
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "m")
        let choice = (try Translation.object(parsed.body)["choices"] as? [[String: Any]])?.first
        #expect(choice?["finish_reason"] as? String == "content_filter")
        #expect(((choice?["message"] as? [String: Any])?["content"]) as? String == "")
    }

    // MARK: - Errors

    /// vertexai-sdk-test-data `mock-responses/googleai/unary-failure-api-key.txt`: the details quote the key.
    @Test func errorBodyGivesTheStatusButNotTheMessage() {
        let body = """
            {"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",\
            "status":"INVALID_ARGUMENT",
              "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID",
                "domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},
               {"@type":"type.googleapis.com/google.rpc.DebugInfo","detail":"Invalid API key: key1234"}]}}
            """
        let error = adapter.error(status: 400, body: Array(body.utf8))
        #expect(error == ProviderError(.upstreamStatus(400), "provider answered HTTP 400 (INVALID_ARGUMENT)",
                                       providerCode: "INVALID_ARGUMENT"))
        #expect(!error.message.contains("key1234"))
    }

    /// The quota error the Gemini troubleshooting guide lists (429 `RESOURCE_EXHAUSTED`), and the same body inside
    /// an array as `streamGenerateContent` without `alt=sse` answers it.
    @Test(arguments: [
        #"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","#
            + #""status":"RESOURCE_EXHAUSTED"}}"#,
        #"[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","#
            + #""status":"RESOURCE_EXHAUSTED"}}]"#,
    ])
    func quotaError(body: String) {
        let error = adapter.error(status: 429, body: Array(body.utf8))
        #expect(error.kind == .upstreamStatus(429))
        #expect(error.providerCode == "RESOURCE_EXHAUSTED")
        #expect(!error.message.contains("quota"))
        #expect(throws: error) { try adapter.parseResponse(status: 429, body: Array(body.utf8), model: "m") }
    }

    // MARK: - Stream

    /// vertexai-sdk-test-data `mock-responses/googleai/streaming-success-basic-reply-short.txt`, followed by the
    /// grounding-only event of google-gemini/generative-ai-js `test-utils/mock-responses/streaming-success-search-
    /// grounding.txt` (a candidate with empty `content`: nothing to show).
    static let basicStream = """
        data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"}}],\
        "usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7,"promptTokensDetails": [{"modality": "TEXT",\
        "tokenCount": 7}]},"modelVersion": "gemini-3.1-flash-lite"}

        data: {"candidates": [{"content": {"parts": [{"text": " capital of Wyoming"}],"role": "model"}}],\
        "usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7,"promptTokensDetails": [{"modality": "TEXT",\
        "tokenCount": 7}]},"modelVersion": "gemini-3.1-flash-lite"}

        data: {"candidates": [{"content": {"parts": [{"text": " is **Cheyenne**.\\n"}],"role": "model"},\
        "finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 7,"candidatesTokenCount": 10,\
        "totalTokenCount": 17,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 7}],\
        "candidatesTokensDetails": [{"modality": "TEXT","tokenCount": 10}]},"modelVersion": "gemini-3.1-flash-lite"}

        data: {"candidates": [{"content": {}, "index": 0,\
         "groundingMetadata": {"webSearchQueries": ["capital of wyoming"]}}], "usageMetadata": {"promptTokenCount": 7,\
         "candidatesTokenCount": 10, "totalTokenCount": 17}}


        """

    @Test(arguments: [1, 9, 100_000])
    func streamBecomesCanonicalChunks(split: Int) throws {
        let pieces = Translation.run(adapter, model: "route-model", sse: Self.basicStream, split: split)
        #expect(pieces.last == .done)
        #expect(Translation.errors(pieces).isEmpty)
        let chunks = try Translation.chunks(pieces)
        // "The", " capital of Wyoming", " is **Cheyenne**.\n", finish, usage.
        #expect(chunks.count == 5)
        #expect(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
        #expect(chunks.allSatisfy { $0["model"] as? String == "gemini-3.1-flash-lite" })
        let deltas = Translation.deltas(chunks)
        #expect(deltas.first?["role"] as? String == "assistant")
        #expect(deltas.dropFirst().allSatisfy { $0["role"] == nil })
        #expect(Translation.text(chunks) == "The capital of Wyoming is **Cheyenne**.\n")
        #expect(Translation.finishReasons(chunks) == ["stop"])
        let usage = try #require(chunks.last?["usage"] as? [String: Any])
        #expect(usage["prompt_tokens"] as? Int == 7)
        #expect(usage["completion_tokens"] as? Int == 10)
        #expect(usage["total_tokens"] as? Int == 17)
        #expect(Translation.usages(pieces) == [Usage(promptTokens: 7, completionTokens: 10, totalTokens: 17)])
    }

    /// generative-ai-js `streaming-success-search-grounding.txt` (first two events): that server repeats
    /// `finishReason` on every event, so the finish chunk must wait for the end of the body.
    @Test func repeatedFinishReasonGivesOneFinishChunkAtTheEnd() throws {
        let sse = """
            data: {"candidates": [{"content": {"parts": [{"text": "The"}], "role": "model"}, "finishReason": "STOP",\
             "index": 0}], "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 1, "totalTokenCount": 9}}

            data: {"candidates": [{"content": {"parts": [{"text": " current stock price for Alphabet Inc. (Google) Clas\
            s C (GOOG)"}], "role": "model"}, "finishReason": "STOP", "index": 0}],\
             "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 17, "totalTokenCount": 25}}


            """
        let pieces = Translation.run(adapter, sse: sse)
        let chunks = try Translation.chunks(pieces)
        #expect(Translation.finishReasons(chunks) == ["stop"])
        #expect((chunks.dropLast(2).last?["choices"] as? [[String: Any]])?.first?["finish_reason"] is NSNull)
        #expect(Translation.usages(pieces) == [Usage(promptTokens: 8, completionTokens: 17, totalTokens: 25)])
        #expect(pieces.last == .done)
    }

    /// vertexai-sdk-test-data `mock-responses/googleai/streaming-success-thinking-function-call-thought-summary-
    /// signature.txt` (thought summaries and the signature shortened).
    @Test func streamedFunctionCallWithThoughts() throws {
        let sse = """
            data: {"candidates": [{"content": {"parts": [{"text": "**Calculating the Days**\\n\\nI've determined the us\
            er's request involves...","thought": true}],"role": "model"},"index": 0}],\
            "usageMetadata": {"promptTokenCount": 38,"totalTokenCount": 106,"thoughtsTokenCount": 68},\
            "modelVersion": "gemini-2.5-flash","responseId": "48SHaPHpHKbG-8YPtZCawAk"}

            data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "now","args": {}},\
            "thoughtSignature": "CiIBVKhc7vB+vaaq6rA/KC79Ts7i"}],"role": "model"},"finishReason": "STOP","index": 0}],\
            "usageMetadata": {"promptTokenCount": 38,"candidatesTokenCount": 6,"totalTokenCount": 212,\
            "thoughtsTokenCount": 168},"modelVersion": "gemini-2.5-flash","responseId": "48SHaPHpHKbG-8YPtZCawAk"}


            """
        let pieces = Translation.run(adapter, sse: sse)
        let chunks = try Translation.chunks(pieces)
        #expect(Translation.text(chunks) == "")
        let calls = Translation.toolCalls(chunks)
        #expect(calls[0]?.id == "call_48SHaPHpHKbG-8YPtZCawAk_0")
        #expect(calls[0]?.name == "now")
        #expect(calls[0]?.arguments == "{}")
        let first = try #require((Translation.deltas(chunks).first?["tool_calls"] as? [[String: Any]])?.first)
        #expect(first["extra_content"] as? NSDictionary
            == ["google": ["thought_signature": "CiIBVKhc7vB+vaaq6rA/KC79Ts7i"]])
        #expect(Translation.finishReasons(chunks) == ["tool_calls"])
        #expect(Translation.usages(pieces) == [Usage(promptTokens: 38, completionTokens: 174, totalTokens: 212)])
        #expect(pieces.last == .done)
    }

    /// vertexai-sdk-test-data `mock-responses/googleai/streaming-failure-prompt-blocked-safety.txt`.
    @Test func promptBlockedMidStream() throws {
        let sse = """
            data: {"candidates": [{"content": {"parts": [{"text": "text1"}],"role": "model"}}],\
            "usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7},"modelVersion": "gemini-2.0-flash"}

            data: {"candidates": [{"content": {"parts": [{"text": "text2"}],"role": "model"}}],\
            "usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7},"modelVersion": "gemini-2.0-flash"}

            data: {"promptFeedback": {"blockReason": "SAFETY",\
            "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH","probability": "HIGH"}]}}


            """
        let pieces = Translation.run(adapter, sse: sse)
        let chunks = try Translation.chunks(pieces)
        #expect(Translation.text(chunks) == "text1text2")
        #expect(Translation.finishReasons(chunks) == ["content_filter"])
        #expect(pieces.last == .done)
    }

    @Test func streamWithoutFinishReasonIsNotDone() throws {
        let cut = Self.basicStream.components(separatedBy: "\n\n")[0...1].joined(separator: "\n\n") + "\n\n"
        let pieces = Translation.run(adapter, sse: cut)
        #expect(Translation.text(try Translation.chunks(pieces)) == "The capital of Wyoming")
        #expect(!pieces.contains(.done))
        #expect(Translation.finishReasons(try Translation.chunks(pieces)).isEmpty)
    }

    /// An error object as an SSE event after the answer started (the shape of Google's error bodies, as
    /// caugner/gemdn's fixtures capture a 503 "model is overloaded").
    @Test func errorEventMidStream() throws {
        let first = Self.basicStream.components(separatedBy: "\n\n")[0]
        let sse = first + "\n\n" + #"data: {"error": {"code": 503, "#
            + #""message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"# + "\n\n"
        let pieces = Translation.run(adapter, sse: sse)
        let errors = Translation.errors(pieces)
        #expect(errors.count == 1)
        #expect(errors.first?.kind == .upstreamStatus(200))
        #expect(errors.first?.providerCode == "UNAVAILABLE")
        #expect(errors.first?.message.contains("overloaded") == false)
        #expect(!pieces.contains(.done))
    }
}
