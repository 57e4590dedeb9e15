import Providers
import Testing

/// Taking tools out of a request: the others are kept byte for byte, and `tools` and `tool_choice` go when none is
/// left; everything else is untouched.
@Suite struct ToolFilterTests {
    static let body = #"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":"#
        + #"{"name":"keep_me","parameters":{"type":"object"}}},{"type":"function","function":{"name":"drop_me"}}],"#
        + #""tool_choice":"auto","temperature":0.2}"#

    @Test func namesAndRemoval() throws {
        let request = try ChatRequest(json: Array(Self.body.utf8))
        #expect(request.toolNames == ["keep_me", "drop_me"])
        let filtered = try request.removingTools(["drop_me"])
        #expect(filtered.toolNames == ["keep_me"])
        let text = String(decoding: filtered.bytes, as: UTF8.self)
        #expect(text.contains(#"{"type":"function","function":{"name":"keep_me","parameters":{"type":"object"}}}"#))
        #expect(text.contains(#""tool_choice":"auto""#) && text.contains(#""temperature":0.2"#))
        #expect(!text.contains("drop_me"))
    }

    @Test func noToolLeftTakesToolChoiceWithIt() throws {
        let request = try ChatRequest(json: Array(Self.body.utf8))
        let none = try request.removingTools(["keep_me", "drop_me"])
        let text = String(decoding: none.bytes, as: UTF8.self)
        #expect(none.toolNames.isEmpty && !text.contains("tools") && !text.contains("tool_choice"))
        #expect(text.contains(#""messages":[{"role":"user","content":"hi"}]"#) && text.contains("temperature"))
    }

    @Test func aRequestWithoutToolsIsUnchanged() throws {
        let plain = try ChatRequest(json: Array(#"{"messages":[{"role":"user","content":"hi"}]}"#.utf8))
        #expect(try plain.removingTools(["x"]).bytes == plain.bytes)
    }
}
