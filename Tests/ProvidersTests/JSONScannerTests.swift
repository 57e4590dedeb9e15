import Foundation
import Providers
import Testing

@Suite struct JSONScannerTests {
    @Test(arguments: [
        #"{}"#, #"[]"#, #"0"#, #"-1.5e+10"#, #""a\"b\\c\/d\u00e9\ud83d\ude00""#, #"true"#, #"null"#,
        #"  {"a": [1, 2, {"b": null}], "c": "x"}  "#, #"[[[[[]]]]]"#, "\"caf\u{e9} \u{1F600}\"",
    ])
    func valid(json: String) {
        #expect(JSONScanner(Array(json.utf8)).document() != nil, "\(json)")
        // Agrees with Foundation.
        #expect((try? JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)) != nil)
    }

    @Test(arguments: [
        "", "{", "[1,]", #"{"a":}"#, #"{"a" 1}"#, #"{a:1}"#, "01", "1.", "-", ".5", "tru", "nul",
        "\"unterminated", "\"bad \\x escape\"", "\"raw \n newline\"", "[1 2]", "{} {}", #"{"a":1,}"#, "\"\\u12\"",
    ])
    func invalid(json: String) {
        #expect(JSONScanner(Array(json.utf8)).document() == nil, "\(json.debugDescription)")
    }

    @Test func deepNestingIsRefusedNotCrashed() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(JSONScanner(Array(deep.utf8)).document() == nil)
        let fine = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(JSONScanner(Array(fine.utf8)).document() != nil)
    }

    @Test func membersElementsAndValues() throws {
        let s = JSONScanner(Array(#"{"k\"ey": "v\nw", "n": 42, "b": false, "arr": [1, "two", {"x": 3}]}"#.utf8))
        let root = try #require(s.document())
        let members = s.members(root)
        #expect(members.map(\.key) == ["k\"ey", "n", "b", "arr"])
        #expect(s.string(members[0].value) == "v\nw")
        #expect(s.int(members[1].value) == 42)
        #expect(s.bool(members[2].value) == false)
        let elements = s.elements(members[3].value)
        #expect(elements.count == 3)
        #expect(s.string(elements[1]) == "two")
        #expect(s.int(try #require(s.member(elements[2], "x"))) == 3)
    }

    /// Keys are matched in place, escaped or not; the first of a repeated key wins; a stop ends the walk.
    @Test func membersMatchedWithoutDecoding() throws {
        let s = JSONScanner(Array(#"{"usage": 1, "u\u0073age": 2, "e\"rr": {"a": [1, {"b": 2}]}, "last": 3}"#.utf8))
        let root = try #require(s.document())
        #expect(s.int(try #require(s.member(root, "usage"))) == 1)
        #expect(s.member(root, "e\"rr").map { s.kind($0) } == .object)
        #expect(s.int(try #require(s.member(root, "last"))) == 3)
        #expect(s.member(root, "us") == nil)
        #expect(s.member(root, "a") == nil)  // not a top-level key
        var keys: [String] = []
        s.forEachMember(root) { key, _ in
            keys.append(s.string(key) ?? "?")
            return !s.string(key, is: "usage") || keys.count < 2
        }
        #expect(keys == ["usage", "usage"])
        #expect(!s.string(try #require(s.member(root, "last")), is: "3"))  // a number is not a string
    }

    @Test func surrogatePairsDecode() throws {
        let s = JSONScanner(Array(#""\ud83d\ude00 \u00e9""#.utf8))
        #expect(s.string(try #require(s.document())) == "\u{1F600} \u{e9}")
    }
}

@Suite struct ChatRequestPassThroughTests {
    func object(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test func onlyModelAndStreamChange() throws {
        let original = #"{"model":"app-model","stream":true,"temperature":0.7,"messages":[{"role":"user","#
            + #""content":"caf\u00e9 \"quoted\""}],"response_format":{"type":"json_object"},"seed":7}"#
        var r = try ChatRequest(json: Array(original.utf8))
        #expect(r.stream == true)
        #expect(r.model == "app-model")
        r.stream = false
        let out = try object(r.openAIBody(model: "gpt-\"4o\""))
        #expect(out["model"] as? String == "gpt-\"4o\"")
        #expect(out["stream"] as? Bool == false)
        #expect(out["stream_options"] == nil)
        #expect(out["temperature"] as? Double == 0.7)
        #expect(out["seed"] as? Int == 7)
        #expect((out["response_format"] as? [String: Any])?["type"] as? String == "json_object")
        let message = try #require((out["messages"] as? [[String: Any]])?.first)
        #expect(message["content"] as? String == "caf\u{e9} \"quoted\"")
    }

    @Test func streamOptionsAreMergedWithIncludeUsage() throws {
        var r = try ChatRequest(json: Array(
            #"{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":false,"other":1}}"#.utf8))
        r.stream = true
        let options = try #require(try object(r.openAIBody(model: "m"))["stream_options"] as? [String: Any])
        #expect(options["include_usage"] as? Bool == true)
        #expect(options["other"] as? Int == 1)
    }

    @Test func maxTokensPrefersTheNewerKey() throws {
        let a = try ChatRequest(json: Array(#"{"messages":[{"role":"user"}],"max_tokens":10}"#.utf8))
        #expect(a.maxTokens == 10)
        let b = try ChatRequest(json: Array(
            #"{"messages":[{"role":"user"}],"max_tokens":10,"max_completion_tokens":20}"#.utf8))
        #expect(b.maxTokens == 20)
    }
}
