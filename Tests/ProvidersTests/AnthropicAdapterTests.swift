import Foundation
import Providers
import Testing

@Suite struct AnthropicAdapterTests {
    let adapter = AnthropicAdapter(baseURL: "https://api.anthropic.com/v1/")

    // MARK: - Request

    /// A tool-using conversation in OpenAI's shape: system prompt, text and two images, an assistant turn with two
    /// parallel tool calls, their two results, then more user text.
    static let toolConversation = """
        {"model":"gpt-4o","messages":[
          {"role":"system","content":"You are a weather bot."},
          {"role":"user","content":[{"type":"text","text":"Compare these skies."},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
            {"type":"image_url","image_url":{"url":"https://example.com/sky.jpg"}}]},
          {"role":"assistant","content":"Checking both cities.","tool_calls":[
            {"id":"toolu_01","type":"function","function":{"name":"get_weather",\
        "arguments":"{\\"location\\":\\"Paris\\",\\"unit\\":\\"c\\"}"}},
            {"id":"toolu_02","type":"function","function":{"name":"get_weather",\
        "arguments":"{\\"location\\":\\"Oslo\\"}"}}]},
          {"role":"tool","tool_call_id":"toolu_01","content":"18C, clear"},
          {"role":"tool","tool_call_id":"toolu_02","content":[{"type":"text","text":"4C, snow"}]},
          {"role":"user","content":"Which is warmer?"}],
         "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather for a city",
           "parameters":{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string"}},
           "required":["location"]}}}],
         "tool_choice":"required","parallel_tool_calls":false,
         "max_completion_tokens":300,"temperature":0.3,"top_p":0.9,"stop":"END","user":"user-hash-1"}
        """

    @Test func requestMapsEveryPartToTheMessagesAPI() throws {
        let http = try adapter.makeRequest(Translation.request(Self.toolConversation, stream: true),
                                           model: "claude-sonnet-4-20250514", apiKey: "sk-ant-test")
        #expect(http.url == "https://api.anthropic.com/v1/messages")
        #expect(Translation.header(http, "x-api-key") == "sk-ant-test")
        #expect(Translation.header(http, "anthropic-version") == "2023-06-01")
        #expect(Translation.header(http, "content-type") == "application/json")
        #expect(Translation.header(http, "authorization") == nil)

        let body = try Translation.object(http.body)
        #expect(body["model"] as? String == "claude-sonnet-4-20250514")
        #expect(body["system"] as? String == "You are a weather bot.")
        #expect(body["max_tokens"] as? Int == 300)
        #expect(body["temperature"] as? Double == 0.3)
        #expect(body["top_p"] as? Double == 0.9)
        #expect(body["stop_sequences"] as? [String] == ["END"])
        #expect(body["stream"] as? Bool == true)
        #expect((body["metadata"] as? [String: Any])?["user_id"] as? String == "user-hash-1")

        let tools = try #require(body["tools"] as? [[String: Any]])
        #expect(tools.count == 1)
        #expect(tools[0]["name"] as? String == "get_weather")
        #expect(tools[0]["description"] as? String == "Weather for a city")
        #expect((tools[0]["input_schema"] as? [String: Any])?["required"] as? [String] == ["location"])
        let choice = try #require(body["tool_choice"] as? [String: Any])
        #expect(choice["type"] as? String == "any")
        #expect(choice["disable_parallel_tool_use"] as? Bool == true)

        // user, assistant, user (two tool results and the follow-up text merged: roles must alternate).
        let messages = try #require(body["messages"] as? [[String: Any]])
        #expect(messages.map { $0["role"] as? String } == ["user", "assistant", "user"])

        let user = try #require(messages[0]["content"] as? [[String: Any]])
        #expect(user.map { $0["type"] as? String } == ["text", "image", "image"])
        let inline = try #require(user[1]["source"] as? [String: Any])
        #expect(inline["type"] as? String == "base64")
        #expect(inline["media_type"] as? String == "image/png")
        #expect(inline["data"] as? String == "iVBORw0KGgo=")
        let linked = try #require(user[2]["source"] as? [String: Any])
        #expect(linked["type"] as? String == "url")
        #expect(linked["url"] as? String == "https://example.com/sky.jpg")

        let assistant = try #require(messages[1]["content"] as? [[String: Any]])
        #expect(assistant.map { $0["type"] as? String } == ["text", "tool_use", "tool_use"])
        #expect(assistant[1]["id"] as? String == "toolu_01")
        #expect(assistant[1]["name"] as? String == "get_weather")
        #expect(assistant[1]["input"] as? NSDictionary == ["location": "Paris", "unit": "c"])

        let results = try #require(messages[2]["content"] as? [[String: Any]])
        #expect(results.map { $0["type"] as? String } == ["tool_result", "tool_result", "text"])
        #expect(results[0]["tool_use_id"] as? String == "toolu_01")
        #expect(results[0]["content"] as? String == "18C, clear")
        #expect(results[1]["tool_use_id"] as? String == "toolu_02")
        #expect(results[1]["content"] as? String == "4C, snow")
        #expect(results[2]["text"] as? String == "Which is warmer?")

        // The tool's schema keeps the app's property order.
        let text = String(decoding: http.body, as: UTF8.self)
        #expect(text.contains(#""properties":{"location":{"type":"string"},"unit":{"type":"string"}}"#))
    }

    @Test func requestDefaultsAndSmallMappings() throws {
        let canonical = try Translation.request("""
            {"messages":[{"role":"developer","content":[{"type":"text","text":"Rule one."}]},
              {"role":"system","content":"Rule two."},
              {"role":"user","content":"Hi"},{"role":"user","content":"Still there?"}],
             "temperature":1.6,"stop":["\\n\\nHuman:","END"],
             "tools":[{"type":"function","function":{"name":"now"}}],
             "tool_choice":{"type":"function","function":{"name":"now"}}}
            """)
        let http = try adapter.makeRequest(canonical, model: "claude-3-5-haiku-latest", apiKey: nil)
        #expect(Translation.header(http, "x-api-key") == nil)
        let body = try Translation.object(http.body)
        #expect(body["max_tokens"] as? Int == AnthropicAdapter.defaultMaxTokens)
        #expect(body["max_tokens"] as? Int == 4096)
        #expect(body["stream"] == nil)
        // Anthropic's temperature stops at 1.
        #expect(body["temperature"] as? Double == 1)
        #expect(body["stop_sequences"] as? [String] == ["\n\nHuman:", "END"])
        let system = try #require(body["system"] as? [[String: Any]])
        #expect(system.map { $0["text"] as? String } == ["Rule one.", "Rule two."])
        #expect(system.allSatisfy { $0["type"] as? String == "text" })
        // Two user messages in a row become one turn.
        let messages = try #require(body["messages"] as? [[String: Any]])
        #expect(messages.count == 1)
        #expect((messages[0]["content"] as? [[String: Any]])?.map { $0["text"] as? String } == ["Hi", "Still there?"])
        let tools = try #require(body["tools"] as? [[String: Any]])
        #expect(tools[0]["input_schema"] as? NSDictionary == ["type": "object", "properties": [:] as NSDictionary])
        #expect(body["tool_choice"] as? NSDictionary == ["type": "tool", "name": "now"])
    }

    @Test(arguments: [
        (#""auto""#, ["type": "auto"]),
        (#""none""#, ["type": "none"]),
        (#""required""#, ["type": "any"]),
    ])
    func toolChoiceMapping(choice: String, expected: [String: String]) throws {
        let canonical = try Translation.request("""
            {"messages":[{"role":"user","content":"Hi"}],"tool_choice":\(choice),
             "tools":[{"type":"function","function":{"name":"now","parameters":{"type":"object"}}}]}
            """)
        let body = try Translation.object(try adapter.makeRequest(canonical, model: "c", apiKey: nil).body)
        #expect(body["tool_choice"] as? [String: String] == expected)
    }

    @Test func requestsAnthropicCannotTakeAreRefusedWithoutQuotingThem() throws {
        let audio = try Translation.request("""
            {"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"UklGRg==",\
            "format":"wav"}}]}]}
            """)
        #expect(throws: ProviderError.self) { try adapter.makeRequest(audio, model: "c", apiKey: nil) }
        let badArguments = try Translation.request("""
            {"messages":[{"role":"user","content":"Hi"},{"role":"assistant","tool_calls":[
              {"id":"t1","type":"function","function":{"name":"f","arguments":"{secret not json"}}]}]}
            """)
        #expect { try adapter.makeRequest(badArguments, model: "c", apiKey: nil) } throws: {
            let e = $0 as! ProviderError
            return e.kind == .badRequest && e.message.contains("messages[1].tool_calls[0]")
                && !e.message.contains("secret")
        }
    }

    // MARK: - Answer

    /// The response example of the Messages API reference (docs.anthropic.com/en/api/messages), with the cache
    /// fields every current answer carries.
    @Test func textAnswerBecomesAChatCompletion() throws {
        let body = """
            {"content":[{"text":"Hi! My name is Claude.","type":"text"}],"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF",
             "model":"claude-3-7-sonnet-20250219","role":"assistant","stop_reason":"end_turn","stop_sequence":null,
             "type":"message","usage":{"input_tokens":2095,"output_tokens":503,"cache_creation_input_tokens":0,
             "cache_read_input_tokens":100}}
            """
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "route-model")
        #expect(parsed.usage == Usage(promptTokens: 2195, completionTokens: 503, totalTokens: 2698))
        let answer = try Translation.object(parsed.body)
        #expect(answer["id"] as? String == "msg_013Zva2CMHLNnXjNJJKqJ2EF")
        #expect(answer["object"] as? String == "chat.completion")
        #expect(answer["created"] as? Int == 0)
        #expect(answer["model"] as? String == "claude-3-7-sonnet-20250219")
        let choice = try #require((answer["choices"] as? [[String: Any]])?.first)
        #expect(choice["index"] as? Int == 0)
        #expect(choice["finish_reason"] as? String == "stop")
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["role"] as? String == "assistant")
        #expect(message["content"] as? String == "Hi! My name is Claude.")
        #expect(message["tool_calls"] == nil)
        let usage = try #require(answer["usage"] as? [String: Any])
        #expect(usage["prompt_tokens"] as? Int == 2195)
        #expect(usage["completion_tokens"] as? Int == 503)
        #expect(usage["total_tokens"] as? Int == 2698)
        #expect((usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int == 100)
    }

    /// The tool-use answer of Anthropic's tool use guide (docs.anthropic.com/en/docs/build-with-claude/tool-use).
    @Test func toolUseAnswerBecomesToolCalls() throws {
        let body = """
            {"id":"msg_01Aq9w938a90dw8q","model":"claude-3-5-sonnet-20241022","stop_reason":"tool_use",
             "role":"assistant","type":"message","content":[
              {"type":"text","text":"I need to call the get_weather function."},
              {"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather",
               "input":{"location":"San Francisco, CA","unit":"celsius"}}],
             "usage":{"input_tokens":472,"output_tokens":89}}
            """
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "m")
        let choice = try #require((try Translation.object(parsed.body)["choices"] as? [[String: Any]])?.first)
        #expect(choice["finish_reason"] as? String == "tool_calls")
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["content"] as? String == "I need to call the get_weather function.")
        let calls = try #require(message["tool_calls"] as? [[String: Any]])
        #expect(calls.count == 1)
        #expect(calls[0]["id"] as? String == "toolu_01A09q90qw90lq917835lq9")
        #expect(calls[0]["type"] as? String == "function")
        let function = try #require(calls[0]["function"] as? [String: Any])
        #expect(function["name"] as? String == "get_weather")
        // `arguments` is the input as compact JSON, in the provider's key order.
        #expect(function["arguments"] as? String == #"{"location":"San Francisco, CA","unit":"celsius"}"#)
        #expect(parsed.usage == Usage(promptTokens: 472, completionTokens: 89, totalTokens: 561))
    }

    @Test(arguments: [
        ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ])
    func stopReasons(stopReason: String, finishReason: String) throws {
        let body = #"{"id":"msg_1","type":"message","role":"assistant","content":[],"stop_reason":"\#(stopReason)"}"#
        let parsed = try adapter.parseResponse(status: 200, body: Array(body.utf8), model: "m")
        let choice = (try Translation.object(parsed.body)["choices"] as? [[String: Any]])?.first
        #expect(choice?["finish_reason"] as? String == finishReason)
    }

    // MARK: - Errors

    /// Error bodies of the errors page (docs.anthropic.com/en/api/errors); the message is the provider's and may
    /// quote the request, so it never reaches ours.
    @Test(arguments: [
        (529, "overloaded_error", "Overloaded"),
        (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
        (400, "invalid_request_error", "messages: text content blocks must be non-empty"),
        (401, "authentication_error", "invalid x-api-key"),
    ])
    func errorBodies(status: Int, type: String, providerMessage: String) {
        let body = #"{"type":"error","error":{"type":"\#(type)","message":"\#(providerMessage)"},"#
            + #""request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#
        let error = adapter.error(status: status, body: Array(body.utf8))
        #expect(error.kind == .upstreamStatus(status))
        #expect(error.providerCode == type)
        #expect(error.message == "provider answered HTTP \(status) (\(type))")
        #expect(!error.message.contains(providerMessage))
        #expect(throws: error) { try adapter.parseResponse(status: status, body: Array(body.utf8), model: "m") }
    }

    @Test func unreadableAnswers() {
        #expect(adapter.error(status: 502, body: Array("<html>Bad gateway</html>".utf8))
            == ProviderError(.upstreamStatus(502), "provider answered HTTP 502"))
        #expect { try adapter.parseResponse(status: 200, body: Array(#"{"id":"msg_1","#.utf8), model: "m") } throws: {
            ($0 as! ProviderError).kind == .malformedResponse
        }
    }

    // MARK: - Stream

    /// The Python SDK's `tests/lib/streaming/fixtures/tool_use_response.txt` (anthropics/anthropic-sdk-python), with
    /// an event type from the future added: the streaming guide says unknown events must be skipped.
    static let toolUseStream = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr","type":"message",\
        "role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,\
        "usage":{"input_tokens":377,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,\
        "service_tier":"standard"}}}

        event: content_block_start
        data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",\
        "text":"'ll check the current weather in Paris for you."}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":0}

        event: content_block_start
        data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",\
        "id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","caller":{"type":"direct"},"input":{}}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"locati"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"on\\": \\"P"}}

        event: future_event_type
        data: {"type":"future_event_type","detail":{"anything":true}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ar"}}

        event: content_block_delta
        data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\\"}"}}

        event: content_block_stop
        data: {"type":"content_block_stop","index":1}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},\
        "usage":{"output_tokens":65}}

        event: message_stop
        data: {"type":"message_stop"}


        """

    @Test(arguments: [1, 5, 64, 100_000])
    func toolUseStreamBecomesCanonicalChunks(split: Int) throws {
        let pieces = Translation.run(adapter, model: "route-model", sse: Self.toolUseStream, split: split)
        #expect(pieces.last == .done)
        #expect(pieces.filter { $0 == .done }.count == 1)
        #expect(Translation.errors(pieces).isEmpty)

        let chunks = try Translation.chunks(pieces)
        #expect(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
        #expect(chunks.allSatisfy { $0["id"] as? String == "msg_019Q1hrJbZG26Fb9BQhrkHEr" })
        #expect(chunks.allSatisfy { $0["model"] as? String == "claude-sonnet-4-20250514" })
        let deltas = Translation.deltas(chunks)
        #expect(deltas.first?["role"] as? String == "assistant")
        #expect(deltas.dropFirst().allSatisfy { $0["role"] == nil })
        #expect(Translation.text(chunks) == "I'll check the current weather in Paris for you.")

        let calls = Translation.toolCalls(chunks)
        #expect(calls.count == 1)
        #expect(calls[0]?.id == "toolu_01NRLabsLyVHZPKxbKvkfSMn")
        #expect(calls[0]?.name == "get_weather")
        #expect(calls[0]?.arguments == #"{"location": "Paris"}"#)
        #expect(Translation.finishReasons(chunks) == ["tool_calls"])

        // The usage chunk comes last, with no choices, input from message_start and output from message_delta.
        let usageChunk = try #require(chunks.last)
        #expect((usageChunk["choices"] as? [Any])?.isEmpty == true)
        let usage = try #require(usageChunk["usage"] as? [String: Any])
        #expect(usage["prompt_tokens"] as? Int == 377)
        #expect(usage["completion_tokens"] as? Int == 65)
        #expect(usage["total_tokens"] as? Int == 442)
        #expect(Translation.usages(pieces) == [Usage(promptTokens: 377, completionTokens: 65, totalTokens: 442)])
    }

    /// The "Basic streaming request" response of the streaming guide (docs.anthropic.com/en/api/messages-streaming).
    static let basicStream = """
        event: message_start
        data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message",\
         "role": "assistant", "content": [], "model": "claude-opus-4-1-20250805", "stop_reason": null,\
         "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

        event: content_block_start
        data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

        event: content_block_delta
        data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

        event: content_block_stop
        data: {"type": "content_block_stop", "index": 0}

        event: message_delta
        data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null},\
         "usage": {"output_tokens": 15}}

        event: message_stop
        data: {"type": "message_stop"}


        """

    @Test func basicStreamTextAndOrder() throws {
        let pieces = Translation.run(adapter, sse: Self.basicStream)
        let chunks = try Translation.chunks(pieces)
        // role, "Hello", "!", finish, usage; then done.
        #expect(chunks.count == 5)
        #expect(pieces.count == 6)
        #expect(Translation.deltas(chunks).first as? [String: String] == ["role": "assistant", "content": ""])
        #expect(Translation.text(chunks) == "Hello!")
        #expect(Translation.finishReasons(chunks) == ["stop"])
        #expect(Translation.usages(pieces) == [Usage(promptTokens: 25, completionTokens: 15, totalTokens: 40)])
        #expect(pieces.last == .done)
    }

    /// A stream cut by the streaming guide's example error event (`overloaded_error`, "which would normally
    /// correspond to an HTTP 529").
    @Test func errorEventMidStream() throws {
        let cut = Self.basicStream.components(separatedBy: "event: content_block_stop")[0]
        let sse = cut + """
            event: error
            data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


            """
        let pieces = Translation.run(adapter, sse: sse)
        #expect(Translation.text(try Translation.chunks(pieces)) == "Hello!")
        let errors = Translation.errors(pieces)
        #expect(errors.count == 1)
        #expect(errors.first?.kind == .upstreamStatus(200))
        #expect(errors.first?.providerCode == "overloaded_error")
        #expect(errors.first?.message.contains("Overloaded") == false)
        #expect(!pieces.contains(.done))
    }

    @Test func streamWithoutMessageStopIsNotDone() throws {
        let cut = Self.basicStream.components(separatedBy: "event: message_stop")[0]
        let pieces = Translation.run(adapter, sse: cut)
        #expect(Translation.text(try Translation.chunks(pieces)) == "Hello!")
        #expect(!pieces.contains(.done))
        var translator = adapter.makeStreamTranslator(model: "m")
        #expect(translator.finish().isEmpty)
    }

    @Test func toolWithoutArgumentsStreamsAnEmptyObject() throws {
        let sse = """
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant",\
            "model":"claude-x","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_9",\
            "name":"now","input":{}}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":0}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},\
            "usage":{"output_tokens":9}}

            event: message_stop
            data: {"type":"message_stop"}


            """
        let chunks = try Translation.chunks(Translation.run(adapter, sse: sse))
        #expect(Translation.toolCalls(chunks)[0]?.arguments == "{}")
    }
}
