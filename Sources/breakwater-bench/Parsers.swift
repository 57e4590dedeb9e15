import Foundation
import Providers
import Resilience

/// `breakwater-bench --parsers`: what the daemon parses of every answer, timed alone in this process — an OpenAI
/// stream event (`parseStreamEvent`), a whole answer (`parseResponse`), the SSE lines of one event, and an answer's
/// rate-limit headers — in nanoseconds per operation, the best of five runs. A cut of a few µs per call drowns in
/// the whole-daemon benchmarks' run-to-run drift on a shared VM; here it shows. To compare two commits, run the
/// bench built at each (the inputs are OpenAI's shapes, as the fake provider sends them).
struct ParserBench {
    static let streamEvent = Array(#"{"id":"chatcmpl-abc123def456","object":"chat.completion.chunk","created":1733000000,"model":"gpt-4o-mini","service_tier":"default","system_fingerprint":"fp_0123456789","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}],"obfuscation":"xyzxyz"}"#.utf8)
    static let wholeAnswer = Array(#"{"id":"chatcmpl-abc123def456","object":"chat.completion","created":1733000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, this is an answer.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_0123456789"}"#.utf8)
    static let headers: [(name: String, value: String)] = [
        ("content-type", "application/json"), ("x-request-id", "req_cdbc20d37f4e04580000000000000001"),
        ("openai-version", "2020-10-01"), ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "2000000"), ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "1999980"), ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "0s"), ("content-length", "496"), ("openai-processing-ms", "0"),
    ]

    var iterations = 100_000

    func run() {
        print("breakwater-bench --parsers: ns per operation, best of 5 runs of \(iterations)")
        print("machine: " + Machine.line)
        print("command: " + Machine.command)
        let adapter = OpenAIAdapter(baseURL: "http://127.0.0.1/v1")
        let event = SSEEvent(data: Self.streamEvent)
        let sseLines = Array("data: ".utf8) + Self.streamEvent + Array("\n\n".utf8)
        let rows: [(String, () -> Int)] = [
            ("OpenAI stream event (parseStreamEvent)", {
                if case .chunk(let bytes, _) = adapter.parseStreamEvent(event) { return bytes.count }
                return -1
            }),
            ("OpenAI whole answer (parseResponse)", {
                (try? adapter.parseResponse(status: 200, body: Self.wholeAnswer))??.totalTokens ?? -1
            }),
            ("SSE lines of one event (SSEParser.feed)", {
                var parser = SSEParser()
                return parser.feed(sseLines).count
            }),
            ("rate-limit headers of one answer (RateLimitHeaders.parse)", {
                RateLimitHeaders.parse(Self.headers, wallNow: 1_733_000_000).remainingRequests ?? -1
            }),
        ]
        print("\n| operation | ns per operation |")
        print("|---|---:|")
        for (name, operation) in rows {
            var best = Double.infinity
            var check = 0
            for _ in 0..<5 {
                let start = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<iterations { check &+= operation() }
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / Double(iterations))
            }
            // `check` keeps the work from being optimised away; a negative result means a parse failed.
            precondition(check > 0, "\(name): the input did not parse")
            print(String(format: "| %@ | %.0f |", name, best))
        }
    }
}
