/// The canonical (OpenAI chat-completions) request read into the pieces other providers' formats are built from:
/// system text, turns of typed parts, tools and sampling settings. Anthropic's and Gemini's adapters both translate
/// from this, so the OpenAI shapes are interpreted in one place.
///
/// Errors name the message index and the problem, never the content.
struct CanonicalConversation {
    /// Where an image or file comes from.
    enum Media: Equatable {
        /// A `data:<type>;base64,<data>` URL, split.
        case base64(mediaType: String, data: String)
        /// An http(s) URL the provider fetches itself.
        case url(String)
    }

    enum Part {
        case text(String)
        case image(Media)
        /// An OpenAI `file` part given inline as a data: URL (PDFs, typically).
        case document(Media)
        /// An OpenAI `input_audio` part: base64 data and its format (`wav`, `mp3`).
        case audio(data: String, format: String)
        case toolCall(ToolCall)
        case toolResult(ToolResult)
    }

    struct ToolCall {
        var id: String
        var name: String
        /// The parsed `arguments` object.
        var arguments: JSONNode
        /// Gemini's thought signature, as Google's OpenAI-compatible API hands it out:
        /// `extra_content.google.thought_signature` on the tool call.
        var thoughtSignature: String?
    }

    struct ToolResult {
        var callID: String
        /// The function's name, found from the assistant turn that made the call (Gemini needs it).
        var name: String?
        var content: String
    }

    enum Role {
        case user, assistant, tool
    }

    struct Message {
        var role: Role
        var parts: [Part]
    }

    struct Tool {
        var name: String
        var description: String?
        /// The function's JSON Schema, as the app wrote it.
        var parameters: JSONNode?
    }

    enum ToolChoice: Equatable {
        case auto, none, required
        case function(String)
    }

    enum ResponseFormat {
        case jsonObject
        case jsonSchema(JSONNode?)
    }

    /// System and developer messages' text, in order.
    var system: [String] = []
    /// User, assistant and tool messages, in order; messages with nothing to send are left out.
    var messages: [Message] = []
    var tools: [Tool] = []
    var toolChoice: ToolChoice?
    var parallelToolCalls: Bool?
    var maxTokens: Int?
    /// Numbers are kept as the app wrote them.
    var temperature: JSONNode?
    var topP: JSONNode?
    var stop: [String] = []
    var seed: JSONNode?
    /// `safety_identifier`, or the older `user`.
    var endUser: String?
    var responseFormat: ResponseFormat?

    init(_ request: ChatRequest) throws(ProviderError) {
        guard let root = JSONNode.parse(request.bytes), root.members != nil else {
            throw ProviderError(.badRequest, "request body must be a JSON object")
        }
        maxTokens = request.maxTokens
        temperature = try Self.number(root, "temperature")
        topP = try Self.number(root, "top_p")
        seed = try Self.number(root, "seed")
        endUser = root["safety_identifier"]?.string ?? root["user"]?.string
        parallelToolCalls = root["parallel_tool_calls"]?.bool

        switch root["stop"] {
        case .string(let s)?: stop = [s]
        case .array(let list)?:
            stop = try list.map { (item) throws(ProviderError) -> String in
                guard let s = item.string else { throw ProviderError(.badRequest, "\"stop\" must hold strings") }
                return s
            }
        case nil, .null?: break
        default: throw ProviderError(.badRequest, "\"stop\" must be a string or an array of strings")
        }

        for (i, message) in (root["messages"]?.array ?? []).enumerated() {
            try read(message, index: i)
        }
        for (i, tool) in (root["tools"]?.array ?? []).enumerated() {
            guard tool["type"]?.string == "function", let function = tool["function"],
                  let name = function["name"]?.string else {
                throw ProviderError(.badRequest, "tools[\(i)] is not a function tool with a name")
            }
            let parameters = function["parameters"].flatMap { $0.isNull ? nil : $0 }
            tools.append(Tool(name: name, description: function["description"]?.string, parameters: parameters))
        }
        toolChoice = try Self.toolChoice(root["tool_choice"])
        responseFormat = try Self.responseFormat(root["response_format"])
    }

    // MARK: - Messages

    private mutating func read(_ message: JSONNode, index i: Int) throws(ProviderError) {
        let role = message["role"]?.string ?? ""
        switch role {
        case "system", "developer":
            for part in try Self.parts(message["content"], index: i) {
                guard case .text(let text) = part else {
                    throw ProviderError(.badRequest, "messages[\(i)]: a \(role) message can only hold text")
                }
                system.append(text)
            }
        case "user":
            append(Message(role: .user, parts: try Self.parts(message["content"], index: i)))
        case "assistant":
            var parts = try Self.parts(message["content"], index: i)
            for (j, call) in (message["tool_calls"]?.array ?? []).enumerated() {
                parts.append(.toolCall(try Self.toolCall(call, index: i, call: j)))
            }
            append(Message(role: .assistant, parts: parts))
        case "tool":
            guard let callID = message["tool_call_id"]?.string else {
                throw ProviderError(.badRequest, "messages[\(i)]: a tool message needs a \"tool_call_id\"")
            }
            let text = try Self.parts(message["content"], index: i).compactMap { part -> String? in
                if case .text(let t) = part { return t }
                return nil
            }.joined()
            let result = ToolResult(callID: callID, name: functionName(forCall: callID), content: text)
            messages.append(Message(role: .tool, parts: [.toolResult(result)]))
        default:
            throw ProviderError(.badRequest, "messages[\(i)] has a role this provider cannot take")
        }
    }

    private mutating func append(_ message: Message) {
        if !message.parts.isEmpty { messages.append(message) }
    }

    /// The name of the most recent tool call with this id (ids may repeat across turns).
    private func functionName(forCall id: String) -> String? {
        for message in messages.reversed() where message.role == .assistant {
            for case .toolCall(let call) in message.parts where call.id == id { return call.name }
        }
        return nil
    }

    private static func toolCall(_ call: JSONNode, index i: Int, call j: Int) throws(ProviderError) -> ToolCall {
        guard let id = call["id"]?.string, let function = call["function"], let name = function["name"]?.string
        else {
            throw ProviderError(.badRequest, "messages[\(i)].tool_calls[\(j)] needs an id and a function name")
        }
        let raw = function["arguments"]?.string ?? ""
        let arguments: JSONNode
        if raw.allSatisfy(\.isWhitespace) {
            arguments = .object([])
        } else if let parsed = JSONNode.parse(raw), parsed.members != nil {
            arguments = parsed
        } else {
            throw ProviderError(.badRequest, "messages[\(i)].tool_calls[\(j)] arguments are not a JSON object")
        }
        let signature = call["extra_content"]?["google"]?["thought_signature"]?.string
        return ToolCall(id: id, name: name, arguments: arguments, thoughtSignature: signature)
    }

    /// A message's `content`: a string, null, or an array of typed parts. Empty text is dropped (Anthropic refuses
    /// empty text blocks; Gemini empty parts).
    private static func parts(_ content: JSONNode?, index i: Int) throws(ProviderError) -> [Part] {
        switch content {
        case nil, .null?:
            return []
        case .string(let s)?:
            return s.isEmpty ? [] : [.text(s)]
        case .array(let list)?:
            var out: [Part] = []
            for (j, item) in list.enumerated() {
                if let part = try part(item, at: "messages[\(i)].content[\(j)]") { out.append(part) }
            }
            return out
        default:
            throw ProviderError(.badRequest, "messages[\(i)].content must be a string or an array of parts")
        }
    }

    private static func part(_ item: JSONNode, at path: String) throws(ProviderError) -> Part? {
        switch item["type"]?.string {
        case "text":
            guard let text = item["text"]?.string else { throw ProviderError(.badRequest, "\(path) has no text") }
            return text.isEmpty ? nil : .text(text)
        case "refusal":
            return nil
        case "image_url":
            guard let url = item["image_url"]?["url"]?.string ?? item["image_url"]?.string else {
                throw ProviderError(.badRequest, "\(path) has no image URL")
            }
            return .image(try media(url, at: path))
        case "file":
            guard let data = item["file"]?["file_data"]?.string else {
                throw ProviderError(.badRequest, "\(path): only files given inline as file_data can be sent")
            }
            return .document(try media(data, at: path))
        case "input_audio":
            guard let data = item["input_audio"]?["data"]?.string,
                  let format = item["input_audio"]?["format"]?.string else {
                throw ProviderError(.badRequest, "\(path) needs input_audio data and format")
            }
            return .audio(data: data, format: format)
        default:
            throw ProviderError(.badRequest, "\(path) has a part type this provider cannot take")
        }
    }

    /// Splits a `data:` URL, or keeps an http(s) URL for the provider to fetch.
    static func media(_ url: String, at path: String) throws(ProviderError) -> Media {
        if url.hasPrefix("data:") {
            guard let comma = url.firstIndex(of: ",") else {
                throw ProviderError(.badRequest, "\(path) has a data: URL without data")
            }
            let header = url[url.index(url.startIndex, offsetBy: 5)..<comma]
            guard header.hasSuffix(";base64") else {
                throw ProviderError(.badRequest, "\(path) has a data: URL that is not base64")
            }
            let mediaType = header.dropLast(";base64".count).split(separator: ";").first.map(String.init) ?? ""
            guard !mediaType.isEmpty else {
                throw ProviderError(.badRequest, "\(path) has a data: URL without a media type")
            }
            return .base64(mediaType: mediaType, data: String(url[url.index(after: comma)...]))
        }
        let lower = url.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://") else {
            throw ProviderError(.badRequest, "\(path) has a URL that is neither data: nor http(s)")
        }
        return .url(url)
    }

    // MARK: - Settings

    private static func number(_ root: JSONNode, _ key: String) throws(ProviderError) -> JSONNode? {
        switch root[key] {
        case nil, .null?: return nil
        case .number(let n)?: return .number(n)
        default: throw ProviderError(.badRequest, "\"\(key)\" must be a number")
        }
    }

    private static func toolChoice(_ value: JSONNode?) throws(ProviderError) -> ToolChoice? {
        switch value {
        case nil, .null?: return nil
        case .string("auto")?: return .auto
        case .string("none")?: return ToolChoice.none
        case .string("required")?: return .required
        case let node?:
            if node["type"]?.string == "function", let name = node["function"]?["name"]?.string {
                return .function(name)
            }
            throw ProviderError(.badRequest, "\"tool_choice\" is not auto, none, required or a named function")
        }
    }

    private static func responseFormat(_ value: JSONNode?) throws(ProviderError) -> ResponseFormat? {
        switch value?["type"]?.string {
        case nil, "text"?: return nil
        case "json_object"?: return .jsonObject
        case "json_schema"?: return .jsonSchema(value?["json_schema"]?["schema"])
        default: throw ProviderError(.badRequest, "\"response_format\" has a type this provider cannot take")
        }
    }
}

extension Array where Element == CanonicalConversation.Message {
    /// Joins neighbouring messages that map to the same provider role: Anthropic needs user and assistant turns to
    /// alternate, and both Anthropic and Gemini want all results of one round of parallel tool calls in one turn.
    func mergingRoles<R: Equatable>(_ role: (CanonicalConversation.Role) -> R)
        -> [(role: R, parts: [CanonicalConversation.Part])] {
        var out: [(role: R, parts: [CanonicalConversation.Part])] = []
        for message in self {
            let r = role(message.role)
            if let last = out.last, last.role == r {
                out[out.count - 1].parts += message.parts
            } else {
                out.append((r, message.parts))
            }
        }
        return out
    }
}
