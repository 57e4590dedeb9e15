import Providers
import Testing

@Suite struct SSEParserTests {
    /// An OpenAI stream as the API reference shows it.
    let openAIStream = """
        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",\
        "choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",\
        "choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}

        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",\
        "choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

        data: [DONE]


        """

    @Test func wholeStreamAtOnce() {
        var p = SSEParser()
        let events = p.feed(Array(openAIStream.utf8))
        #expect(events.count == 4)
        #expect(events.last?.dataString == "[DONE]")
        #expect(events[1].dataString.contains("\"content\":\"Hello\""))
    }

    @Test(arguments: [1, 2, 3, 7, 64])
    func anySplitGivesTheSameEvents(size: Int) {
        var whole = SSEParser()
        let expected = whole.feed(Array(openAIStream.utf8))
        var p = SSEParser()
        var got: [SSEEvent] = []
        let bytes = Array(openAIStream.utf8)
        for start in stride(from: 0, to: bytes.count, by: size) {
            got += p.feed(bytes[start..<min(start + size, bytes.count)])
        }
        #expect(got == expected)
    }

    @Test func crlfCommentsEventNamesAndMultilineData() {
        var p = SSEParser()
        let text = ": keep-alive\r\nevent: message_start\r\ndata: line one\r\ndata: line two\r\nid: 7\r\n\r\n"
            + "data:no-space\r\r"
        let events = p.feed(Array(text.utf8))
        #expect(events == [
            SSEEvent(event: "message_start", data: "line one\nline two", id: "7"),
            SSEEvent(event: nil, data: "no-space", id: "7"),
        ])
    }

    @Test func crlfSplitAcrossFeeds() {
        var p = SSEParser()
        #expect(p.feed(Array("data: a\r".utf8)).isEmpty)
        #expect(p.feed(Array("\n\r".utf8)) == [SSEEvent(event: nil, data: "a", id: nil)])
        #expect(p.feed(Array("\ndata: b\n\n".utf8)) == [SSEEvent(event: nil, data: "b", id: nil)])
    }

    @Test func blankLinesWithoutDataDispatchNothing() {
        var p = SSEParser()
        #expect(p.feed(Array("\n\n: ping\n\nevent: x\n\n".utf8)).isEmpty)
    }
}
