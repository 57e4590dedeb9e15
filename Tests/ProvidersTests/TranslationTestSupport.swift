import Foundation
import Providers
import Testing

/// Helpers shared by the translating adapters' tests: build canonical requests, read JSON bodies, and run a whole
/// SSE fixture through a stream translator the way the daemon does (parse, translate each event, then `finish()`).
enum Translation {
    static func request(_ json: String, stream: Bool = false) throws -> ChatRequest {
        var request = try ChatRequest(json: Array(json.utf8))
        request.stream = stream
        return request
    }

    static func object(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    static func header(_ http: ProviderHTTPRequest, _ name: String) -> String? {
        http.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Feeds `sse` to a fresh parser in pieces of `split` bytes and translates every event, then ends the body.
    static func run(_ adapter: some ProviderAdapter, model: String = "m", sse: String, split: Int = 7)
        -> [StreamPiece] {
        var parser = SSEParser()
        var translator = adapter.makeStreamTranslator(model: model)
        var pieces: [StreamPiece] = []
        let bytes = Array(sse.utf8)
        var i = 0
        while i < bytes.count {
            for event in parser.feed(Array(bytes[i..<min(i + split, bytes.count)])) {
                pieces += translator.translate(event)
            }
            i += split
        }
        return pieces + translator.finish()
    }

    /// The chunks among `pieces`, parsed.
    static func chunks(_ pieces: [StreamPiece]) throws -> [[String: Any]] {
        try pieces.compactMap { piece in
            guard case .chunk(let bytes, _) = piece else { return nil }
            return try object(bytes)
        }
    }

    /// The first choice's delta of each chunk that has one.
    static func deltas(_ chunks: [[String: Any]]) -> [[String: Any]] {
        chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"]) as? [String: Any] }
    }

    /// All `delta.content` pieces joined: the text the app shows.
    static func text(_ chunks: [[String: Any]]) -> String {
        deltas(chunks).compactMap { $0["content"] as? String }.joined()
    }

    /// The `finish_reason`s that were not null, in order.
    static func finishReasons(_ chunks: [[String: Any]]) -> [String] {
        chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["finish_reason"]) as? String }
    }

    /// Each streamed tool call rebuilt from its deltas: index → (id, name, joined arguments).
    static func toolCalls(_ chunks: [[String: Any]]) -> [Int: (id: String, name: String, arguments: String)] {
        var calls: [Int: (id: String, name: String, arguments: String)] = [:]
        for delta in deltas(chunks) {
            for call in delta["tool_calls"] as? [[String: Any]] ?? [] {
                let index = call["index"] as? Int ?? -1
                let function = call["function"] as? [String: Any]
                var entry = calls[index] ?? ("", "", "")
                if let id = call["id"] as? String { entry.id = id }
                if let name = function?["name"] as? String { entry.name = name }
                entry.arguments += function?["arguments"] as? String ?? ""
                calls[index] = entry
            }
        }
        return calls
    }

    static func errors(_ pieces: [StreamPiece]) -> [ProviderError] {
        pieces.compactMap { if case .error(let e) = $0 { e } else { nil } }
    }

    /// The usage carried beside the chunks (what the daemon records).
    static func usages(_ pieces: [StreamPiece]) -> [Usage] {
        pieces.compactMap { if case .chunk(_, let usage) = $0 { usage } else { nil } }
    }

    /// The arguments string parsed back, for comparing objects without caring about spacing.
    static func json(_ text: String) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? NSDictionary)
    }
}
