import BreakwaterClient
import FakeProviderKit
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Admin commands over the daemon's own socket, allowed only to the uids/gids the config names (SO_PEERCRED).
@Suite(.serialized, .timeLimit(.minutes(2))) struct AdminTests {
    @Test func statusForAnAdminAndForbiddenForOthers() async throws {
        let d = try await DaemonUnderTest.start()
        defer { d.stop() }
        _ = try await d.client().send(route: "default", body: chat("one call"))
        let status = try ChildProcess(binDir + "/breakwater", ["status", "--json", "--socket", d.socket],
                                      logPath: d.dir + "/status.log")
        #expect(try await status.waitForExit() == 0, "\(status.output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any])
        #expect(json["calls"] as? Int == 1)
        #expect(json["calls_in_flight"] as? Int == 0)

        // Another user may reach the socket but not administer the daemon. The CLI is copied next to the socket so
        // that user can run it wherever the build tree lives.
        chmod(d.dir, 0o755)
        chmod(d.socket, 0o666)
        let cli = d.dir + "/breakwater"
        try FileManager.default.copyItem(atPath: binDir + "/breakwater", toPath: cli)
        chmod(cli, 0o755)
        let setpriv = "/usr/bin/setpriv"
        try #require(FileManager.default.isExecutableFile(atPath: setpriv))
        let other = try ChildProcess(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups",
                                               cli, "status", "--socket", d.socket],
                                     logPath: d.dir + "/other.log")
        #expect(try await other.waitForExit() == 2, "\(other.output)")
        #expect(other.output.contains("FORBIDDEN"), "\(other.output)")
        // And an ordinary call from that user still works: only admin commands are refused.
        let call = try ChildProcess(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups",
                                              cli, "call", "--socket", d.socket, "--message", "hi"],
                                    logPath: d.dir + "/call.log")
        #expect(try await call.waitForExit() == 0, "\(call.output)")
    }

    /// `breakwater breakers` shows an open breaker with its reopen time; `breakwater breaker reset` closes it.
    @Test func breakersAndBreakerReset() async throws {
        let d = try await DaemonUnderTest.start(providerOptions: "    circuit_breaker: {failure_threshold: 2, timeout_period: 60s}")
        defer { d.stop() }
        d.fake.script([FaultStep(status: 503), FaultStep(status: 503), FaultStep(status: 503)])
        _ = try? await d.client().send(route: "default", body: chat("fails"))
        func cli(_ args: [String]) async throws -> (Int32?, String) {
            let p = try ChildProcess(binDir + "/breakwater", args + ["--socket", d.socket],
                                     logPath: d.dir + "/cli-\(UUID().uuidString).log")
            return (try await p.waitForExit(), p.output)
        }
        let (listed, json) = try await cli(["breakers", "--json"])
        #expect(listed == 0, "\(json)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let breaker = try #require((o["breakers"] as? [[String: Any]])?.first)
        #expect(breaker["target"] as? String == "fake/gpt-4o-mini")
        #expect(breaker["state"] as? String == "open")
        #expect((breaker["reopens_in_ms"] as? Int ?? 0) > 50_000)
        // While open, calls fail at once without reaching the provider.
        let before = d.fake.stats().requests
        await #expect { _ = try await d.client().send(route: "default", body: chat("x")) } throws: { _ in true }
        #expect(d.fake.stats().requests == before)

        let (reset, out) = try await cli(["breaker", "reset", "fake/gpt-4o-mini"])
        #expect(reset == 0 && out.contains("closed"), "\(out)")
        let (_, table) = try await cli(["breakers"])
        #expect(table.contains("fake/gpt-4o-mini") && table.contains("closed"), "\(table)")
        let r = try await d.client().send(route: "default", body: chat("after reset"))
        #expect(content(r.body) == "Echo: after reset")
        let (unknown, _) = try await cli(["breaker", "reset", "nope/none"])
        #expect(unknown == 2)
    }
}
