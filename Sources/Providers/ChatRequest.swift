import Foundation

/// The canonical request: an OpenAI chat-completions body, as apps already write it.
///
/// Kept as the app's own bytes plus the positions of its top-level fields: OpenAI-compatible providers get the
/// body back with only `model` and `stream` changed, so fields this version does not interpret (tools,
/// response_format, ...) pass through untouched and nothing is re-encoded.
public struct ChatRequest: Sendable {
    public let bytes: [UInt8]
    let members: [(key: String, value: Range<Int>)]
    /// Whether the answer is streamed. The daemon sets it from the REQUEST frame, whatever the body said.
    public var stream: Bool

    /// Parses and checks an app's request body. Error messages name the problem, never the content.
    public init(json bytes: [UInt8]) throws(ProviderError) {
        let scanner = JSONScanner(bytes)
        guard let root = scanner.document() else {
            throw ProviderError(.badRequest, "request body is not valid JSON")
        }
        guard scanner.kind(root) == .object else {
            throw ProviderError(.badRequest, "request body must be a JSON object")
        }
        let members = scanner.members(root)
        guard let messages = members.first(where: { $0.key == "messages" })?.value,
              scanner.kind(messages) == .array else {
            throw ProviderError(.badRequest, "request body needs a \"messages\" array")
        }
        let list = scanner.elements(messages)
        guard !list.isEmpty else {
            throw ProviderError(.badRequest, "\"messages\" must not be empty")
        }
        for (i, m) in list.enumerated() {
            guard scanner.kind(m) == .object, let role = scanner.member(m, "role"), scanner.kind(role) == .string else {
                throw ProviderError(.badRequest, "messages[\(i)] has no \"role\" string")
            }
        }
        self.bytes = bytes
        self.members = members
        self.stream = members.first { $0.key == "stream" }.flatMap { scanner.bool($0.value) } ?? false
    }

    private func member(_ key: String) -> Range<Int>? {
        members.first { $0.key == key }?.value
    }

    /// The model the app named (routes decide the real one).
    public var model: String? { member("model").flatMap { JSONScanner(bytes).string($0) } }

    /// The function names in `tools`, in order.
    public var toolNames: [String] {
        guard let tools = member("tools") else { return [] }
        let scanner = JSONScanner(bytes)
        guard scanner.kind(tools) == .array else { return [] }
        return scanner.elements(tools).compactMap { Self.toolName($0, scanner) }
    }

    private static func toolName(_ tool: Range<Int>, _ scanner: JSONScanner) -> String? {
        guard scanner.kind(tool) == .object, let function = scanner.member(tool, "function"),
              scanner.kind(function) == .object, let name = scanner.member(function, "name") else { return nil }
        return scanner.string(name)
    }

    /// This request without the tools named in `removed`: their entries are cut out of `tools` (the others kept
    /// byte for byte); when none is left, `tools` and `tool_choice` go too.
    public func removingTools(_ removed: Set<String>) throws(ProviderError) -> ChatRequest {
        guard let tools = member("tools") else { return self }
        let scanner = JSONScanner(bytes)
        let kept = scanner.elements(tools).filter { Self.toolName($0, scanner).map { !removed.contains($0) } ?? true }
        var out: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        for m in members {
            var value = Array(bytes[m.value])
            if m.key == "tools" {
                if kept.isEmpty { continue }
                value = [UInt8(ascii: "[")] + kept.map { Array(bytes[$0]) }.joined(separator: [UInt8(ascii: ",")])
                    + [UInt8(ascii: "]")]
            }
            if m.key == "tool_choice", kept.isEmpty { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            appendJSONString(m.key, to: &out)
            out.append(UInt8(ascii: ":"))
            out += value
        }
        out.append(UInt8(ascii: "}"))
        var request = try ChatRequest(json: out)
        request.stream = stream
        return request
    }

    /// `max_completion_tokens`, or the older `max_tokens`.
    public var maxTokens: Int? {
        (member("max_completion_tokens") ?? member("max_tokens")).flatMap { JSONScanner(bytes).int($0) }
    }


    /// The body for an OpenAI-compatible provider: the app's fields as they were, with `model` and `stream` set,
    /// and `stream_options.include_usage` on for streams so the usage can be reported.
    public func openAIBody(model: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(bytes.count + model.utf8.count + 64)
        var streamOptions: Range<Int>?
        for m in members {
            switch m.key {
            case "model", "stream": continue
            case "stream_options":
                streamOptions = m.value
                continue
            default: break
            }
            appendJSONString(m.key, to: &out)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: bytes[m.value])
            out.append(UInt8(ascii: ","))
        }
        out += Array(#""model":"#.utf8)
        appendJSONString(model, to: &out)
        out += Array(stream ? #","stream":true"#.utf8 : #","stream":false"#.utf8)
        if stream {
            out += Array(#","stream_options":{"include_usage":true"#.utf8)
            let scanner = JSONScanner(bytes)
            if let options = streamOptions, scanner.kind(options) == .object {
                for m in scanner.members(options) where m.key != "include_usage" {
                    out.append(UInt8(ascii: ","))
                    appendJSONString(m.key, to: &out)
                    out.append(UInt8(ascii: ":"))
                    out.append(contentsOf: bytes[m.value])
                }
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "}"))
        return out
    }
}

/// The tool (function) names an OpenAI-shaped answer calls: `choices[].message.tool_calls[].function.name` in a
/// whole `chat.completion`, `choices[].delta.tool_calls[].function.name` in a stream chunk (where a call's name
/// arrives in its first delta). What the daemon checks against the agent's scopes.
public enum ToolCalls {
    private static let marker = Array(#""tool_calls""#.utf8)

    /// Whether `bytes` contain `"tool_calls"` at all: the cheap test before parsing an answer. A plain loop over the
    /// bytes (the standard library's generic `firstRange(of:)` resolved to Foundation's unspecialized one, several
    /// microseconds per answer).
    public static func mentioned(in bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { b in
            marker.withUnsafeBufferPointer { m in
                guard b.count >= m.count else { return false }
                var i = 0
                let last = b.count - m.count
                while i <= last {
                    if b[i] == m[0] {
                        var j = 1
                        while j < m.count, b[i + j] == m[j] { j += 1 }
                        if j == m.count { return true }
                    }
                    i += 1
                }
                return false
            }
        }
    }

    public static func names(in answer: [UInt8]) -> [String] {
        let scanner = JSONScanner(answer)
        guard let root = scanner.document(), scanner.kind(root) == .object,
              let choices = scanner.member(root, "choices"), scanner.kind(choices) == .array else { return [] }
        var names: [String] = []
        for choice in scanner.elements(choices) where scanner.kind(choice) == .object {
            for key in ["message", "delta"] {
                guard let part = scanner.member(choice, key), scanner.kind(part) == .object,
                      let calls = scanner.member(part, "tool_calls"), scanner.kind(calls) == .array else { continue }
                for call in scanner.elements(calls) where scanner.kind(call) == .object {
                    if let function = scanner.member(call, "function"), scanner.kind(function) == .object,
                       let name = scanner.member(function, "name"), let text = scanner.string(name) {
                        names.append(text)
                    }
                }
            }
        }
        return names
    }
}
