// libFuzzer target: what the daemon reads from apps and providers — the JSON scanner, the chat request, the SSE
// parser, and each provider adapter's response, error and stream translation — on arbitrary bytes.
// Built by scripts/fuzz.sh with `swiftc -sanitize=fuzzer,address` together with Sources/Providers.

import Foundation

let adapters: [any ProviderAdapter] = [
    OpenAIAdapter(baseURL: "http://p.invalid/v1"),
    AnthropicAdapter(baseURL: "http://a.invalid/v1"),
    GeminiAdapter(baseURL: "http://g.invalid/v1beta"),
    AzureOpenAIAdapter(baseURL: "http://z.invalid"),
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProviders(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard let control = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    switch control % 4 {
    case 0:
        let scanner = JSONScanner(bytes)
        if let root = scanner.document() { walk(scanner, root, depth: 0) }
    case 1:
        if let chat = try? ChatRequest(json: bytes) {
            for adapter in adapters { _ = try? adapter.makeRequest(chat, model: "m", apiKey: "k") }
            // Tools out of scope taken out: what is left must still be a request.
            let names = chat.toolNames
            if let first = names.first, let filtered = try? chat.removingTools([first]) {
                precondition(!filtered.toolNames.contains(first), "a removed tool is still in the request")
            }
        }
        // The tool calls an answer names, as the daemon checks them.
        if ToolCalls.mentioned(in: bytes) { _ = ToolCalls.names(in: bytes) }
    case 2:
        let adapter = adapters[Int(control >> 2) % adapters.count]
        _ = try? adapter.parseResponse(status: 200, body: bytes, model: "m")
        _ = adapter.error(status: 400 + Int(control % 100), body: bytes)
    default:
        // An event stream, delivered in pieces cut where the control byte says, through one adapter's translator.
        var parser = SSEParser()
        var translator = adapters[Int(control >> 2) % adapters.count].makeStreamTranslator(model: "m")
        let step = max(1, Int(control >> 2))
        var i = 0
        while i < bytes.count {
            for event in parser.feed(Array(bytes[i..<min(i + step, bytes.count)])) {
                _ = translator.translate(event)
            }
            i += step
        }
        _ = translator.finish()
    }
    return 0
}

func walk(_ s: JSONScanner, _ range: Range<Int>, depth: Int) {
    guard depth < 64, let kind = s.kind(range) else { return }
    _ = s.string(range)
    _ = s.int(range)
    _ = s.bool(range)
    _ = kind
    for (_, value) in s.members(range) { walk(s, value, depth: depth + 1) }
    for element in s.elements(range) { walk(s, element, depth: depth + 1) }
}
