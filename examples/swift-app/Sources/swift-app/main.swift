// A small app on Breakwater: wait for the daemon, one whole answer, one streamed, one error.
//
//     swift run --package-path examples/swift-app    (BREAKWATER_SOCKET names the daemon's socket)
import BreakwaterClient

#if canImport(Glibc)
import Glibc
#endif

let socket = getenv("BREAKWATER_SOCKET").map { String(cString: $0) } ?? "/run/breakwater/breakwater.sock"
let client = BreakwaterClient(socketPath: socket, clientName: "swift-app")
let body = Array(#"{"messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}"#.utf8)

do {
    try await client.waitReady(timeout: .seconds(10))
    let answer = try await client.send(route: "default", body: body)
    print("whole answer from \(answer.head.provider)/\(answer.head.model) after \(answer.head.attempts) attempt(s), "
          + "\(answer.body.count) bytes")
    var chunks = 0
    for try await _ in try await client.stream(route: "default", body: body) { chunks += 1 }
    print("streamed answer: \(chunks) chunks")
    do {
        _ = try await client.send(route: "no-such-route", body: body)
    } catch {
        print("an unknown route fails with \(error.code?.name ?? "?")")
    }
} catch {
    print("swift-app failed: \(error)")
    exit(1)
}
