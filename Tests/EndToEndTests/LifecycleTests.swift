import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .timeLimit(.minutes(2))) struct LifecycleTests {
    /// SIGTERM: GOAWAY to every connection, the in-flight call still completes, new calls are refused, then exit 0.
    @Test func sigtermSendsGoAwayDrainsAndExits() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        d.fake.script([FaultStep(delayFirstByteMs: 1500)])
        let raw = try RawConnection(path: d.socket)
        try raw.hello()
        raw.write(CallRequest(route: "default").frame(streamID: 1))
        raw.write(.data(streamID: 1, chat("in flight during shutdown"), endStream: true))
        #expect(try await waitUntil { d.fake.stats().inFlight == 1 })

        d.daemon.signal(SIGTERM)
        let goAwayFrame = try #require(try raw.read())
        #expect(goAwayFrame.type == .goAway)
        let goAway = try GoAway(frame: goAwayFrame)
        #expect(goAway.lastStreamID == 1)
        #expect(goAway.code == .shuttingDown)

        // A call opened after GOAWAY is not started.
        raw.write(CallRequest(route: "default").frame(streamID: 3, endStream: true))
        var types: [FrameType] = []
        var refused: ErrorMessage?
        var answer: [UInt8] = []
        while let f = try raw.read() {
            types.append(f.type)
            if f.type == .error, f.streamID == 3 { refused = try ErrorMessage(frame: f) }
            if f.type == .data, f.streamID == 1 { answer += f.payload }
        }
        #expect(refused?.code == .notAccepted)
        #expect(types.contains(.response) && types.contains(.trailers), "in-flight call did not finish: \(types)")
        #expect(content(answer) == "Echo: in flight during shutdown")
        #expect(try await d.daemon.waitForExit() == 0)
    }

    /// Socket activation: systemd-socket-activate owns the socket and starts the daemon on the first connection,
    /// passing the listening socket as fd 3 (LISTEN_FDS=1).
    @Test func socketActivation() async throws {
        let activator = "/usr/bin/systemd-socket-activate"
        try #require(FileManager.default.isExecutableFile(atPath: activator), "install systemd (see .ci/run)")
        let fake = try await FakeProvider.start()
        defer { Task { try? await fake.shutdown() } }
        let dir = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/c.yaml"
        try """
        providers:
          fake: {kind: openai, base_url: "\(fake.baseURL)", api_key_env: BW_TEST_KEY, http_version: "1.1"}
        routes:
          default: [{provider: fake, model: gpt-4o-mini}]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let socket = dir + "/activated.sock"
        let unused = dir + "/must-not-exist.sock"
        let act = try ChildProcess(activator, ["-l", socket, "-E", "BW_TEST_KEY", binDir + "/breakwaterd", "--config", config,
                                               "--socket", unused],
                                   environment: ["BW_TEST_KEY": "k"], logPath: dir + "/act.log")
        defer { act.stop() }
        #expect(try await waitUntil { FileManager.default.fileExists(atPath: socket) })
        let r = try await BreakwaterClient(socketPath: socket).send(route: "default", body: chat("activated"))
        #expect(content(r.body) == "Echo: activated")
        // The daemon served the inherited socket rather than binding its own path.
        #expect(!FileManager.default.fileExists(atPath: unused))
        #expect(act.output.contains("socket from systemd"), "\(act.output)")
    }

    /// The client shim connects again after the daemon restarts.
    @Test func clientReconnectsAfterDaemonRestart() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        let client = d.client()
        _ = try await client.send(route: "default", body: chat("before"))
        d.daemon.signal(SIGTERM)
        #expect(try await d.daemon.waitForExit() == 0)
        let config = d.dir + "/breakwater.yaml"
        let again = try ChildProcess(binDir + "/breakwaterd", ["--config", config, "--socket", d.socket],
                                     environment: ["BW_TEST_KEY": "k"], logPath: d.dir + "/daemon2.log")
        defer { again.stop() }
        let r = try await client.send(route: "default", body: chat("after restart"))
        #expect(content(r.body) == "Echo: after restart")
    }

    @Test func checkConfigReportsEveryErrorWithFileAndLine() async throws {
        let dir = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = dir + "/bad.yaml"
        try """
        providers:
          openai:
            kind: openai
            base_url: https://api.openai.com/v1
            api_key: sk-should-not-be-here
          other:
            kind: martian
            base_url: ftp://x
        routes:
          default:
            - provider: openai
              model: gpt-4o
            - provider: missing
              model: x
        limits:
          max_body_bytes: -3
        """.write(toFile: bad, atomically: true, encoding: .utf8)
        let check = try ChildProcess(binDir + "/breakwaterd", ["--check-config", bad], logPath: dir + "/out")
        #expect(try await check.waitForExit() == 1)
        let out = check.output
        #expect(out.contains("\(bad):5:"), "api_key line: \(out)")
        #expect(out.contains("\(bad):7:"), "unknown kind line: \(out)")
        #expect(out.contains("\(bad):8:"), "base_url line: \(out)")
        #expect(out.contains("\(bad):13:"), "missing provider line: \(out)")
        #expect(out.contains("\(bad):16:"), "limit line: \(out)")
        #expect(!out.contains("sk-should-not-be-here"))

        let good = dir + "/good.yaml"
        try "routes:\n  default:\n    - {provider: openai, model: gpt-4o-mini}\n"
            .write(toFile: good, atomically: true, encoding: .utf8)
        let ok = try ChildProcess(binDir + "/breakwaterd", ["--check-config", good], logPath: dir + "/out2")
        #expect(try await ok.waitForExit() == 0)
        #expect(ok.output.contains("OK"))
    }
}
