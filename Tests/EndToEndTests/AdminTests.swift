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
        #expect(json["calls_per_second"] is Double || json["calls_per_second"] is Int, "\(json)")
        #expect(json["uptime_seconds"] as? Int ?? -1 >= 0, "\(json)")
        #expect(json["policy_enforced"] as? Bool == false, "\(json)")
        // The table shows every field, the call rate among them.
        let table = try ChildProcess(binDir + "/breakwater", ["status", "--socket", d.socket],
                                     logPath: d.dir + "/status-table.log")
        #expect(try await table.waitForExit() == 0)
        #expect(table.output.contains("calls per second: ") && table.output.contains("uptime seconds: "),
                "\(table.output)")

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
        let (breakers, refused) = try await asNobody(d, ["breakers"])
        #expect(breakers == 2 && refused.contains("FORBIDDEN"), "\(refused)")
        // And an ordinary call from that user still works: only admin commands are refused.
        let call = try ChildProcess(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups",
                                              cli, "call", "--socket", d.socket, "--message", "hi"],
                                    logPath: d.dir + "/call.log")
        #expect(try await call.waitForExit() == 0, "\(call.output)")
    }

    /// `breakwater breakers` shows an open breaker with its reopen time; `breakwater breaker reset` closes it.
    @Test func breakersAndBreakerReset() async throws {
        // One call whose three attempts all fail opens it (failure_threshold counts failed calls).
        let d = try await DaemonUnderTest.start(providerOptions: "    circuit_breaker: {failure_threshold: 1, timeout_period: 60s}")
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

        let (reset, out) = try await cli(["breaker", "reset", "fake/gpt-4o-mini", "--json"])
        #expect(reset == 0, "\(out)")
        let answer = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "\(out)")
        #expect(answer["target"] as? String == "fake/gpt-4o-mini" && answer["state"] as? String == "closed")
        let (_, table) = try await cli(["breakers"])
        #expect(table.contains("fake/gpt-4o-mini") && table.contains("closed"), "\(table)")
        let r = try await d.client().send(route: "default", body: chat("after reset"))
        #expect(content(r.body) == "Echo: after reset")
        let (unknown, _) = try await cli(["breaker", "reset", "nope/none"])
        #expect(unknown == 2)
    }

    /// Every admin command as a user runs it: the CLI as a child process against a daemon with a policy, checked
    /// by exit status and by what it prints.
    @Test func everyCommandAgainstARunningDaemon() async throws {
        let d = try await DaemonUnderTest.start(policy: GovernanceE2ETests.policy())
        defer { d.stop() }

        // No call is waiting: an empty table, and an empty list in JSON.
        let (listed, empty) = try await cli(d, ["approvals"])
        #expect(listed == 0 && empty.contains("no calls are waiting for an approval"), "\(empty)")
        let (_, emptyJSON) = try await cli(d, ["approvals", "--json"])
        let none = try #require(try JSONSerialization.jsonObject(with: Data(emptyJSON.utf8)) as? [String: Any])
        #expect((none["pending"] as? [Any])?.isEmpty == true, "\(emptyJSON)")

        // An unknown approval id: exit status 2 and the daemon's reason, with or without --json.
        for args in [["approve", "apr-unknown"], ["approve", "apr-unknown", "--json"],
                     ["deny", "apr-unknown", "--reason", "no"], ["deny", "apr-unknown", "--json"]] {
            let (status, out) = try await cli(d, args)
            #expect(status == 2, "\(args): \(out)")
            #expect(out.contains("FORBIDDEN") && out.contains("no approval request \"apr-unknown\""), "\(args): \(out)")
        }

        // A call that waits for an approval shows in status and approvals, and `approve --json` answers it.
        var c = BreakwaterClient.Configuration(socketPath: d.socket,
                                               credential: Array(GovernanceE2ETests.refundToken.utf8),
                                               clientName: "admin-e2e")
        c.reconnectAttempts = 1
        let refund = BreakwaterClient(configuration: c)
        let ids = IDBox()
        let waiting = Task {
            try await refund.send(route: "default", body: chat("refund"), action: "refund.issue", tenant: "acme",
                                  onNotice: { ids.add($0.approvalID ?? "") })
        }
        #expect(try await waitUntil { ids.count == 1 })
        let id = try #require(ids.all.first)
        let (_, status) = try await cli(d, ["status"])
        #expect(status.contains("pending approvals: 1") && status.contains("calls in flight: 1"), "\(status)")
        let (_, pendingJSON) = try await cli(d, ["approvals", "--json"])
        let pending = try #require(try JSONSerialization.jsonObject(with: Data(pendingJSON.utf8)) as? [String: Any])
        let entry = try #require((pending["pending"] as? [[String: Any]])?.first, "\(pendingJSON)")
        #expect(entry["id"] as? String == id && entry["agent"] as? String == "refund-agent")
        #expect(entry["action"] as? String == "refund.issue" && entry["tenant"] as? String == "acme")
        let (approved, approveJSON) = try await cli(d, ["approve", id, "--json"])
        #expect(approved == 0, "\(approveJSON)")
        let decided = try #require(try JSONSerialization.jsonObject(with: Data(approveJSON.utf8)) as? [String: Any])
        #expect(decided["id"] as? String == id && decided["state"] as? String == "approved", "\(approveJSON)")
        #expect(content(try await waiting.value.body) == "Echo: refund")
        let (again, twice) = try await cli(d, ["deny", id])
        #expect(again == 2, "an approval already decided cannot be denied: \(twice)")

        // Policy dry runs: the decision and the rule that made it.
        let (checked, needsApproval) = try await cli(d, ["policy", "check", "--agent", "refund-agent",
                                                         "--action", "refund.issue", "--tenant", "acme"])
        #expect(checked == 0, "\(needsApproval)")
        #expect(needsApproval.contains("decision: require_approval")
            && needsApproval.contains("destructive_changes"), "\(needsApproval)")
        let (_, outOfScope) = try await cli(d, ["policy", "check", "--agent", "invoice-agent", "--action",
                                                "refund.issue", "--tenant", "acme", "--json"])
        let deny = try #require(try JSONSerialization.jsonObject(with: Data(outOfScope.utf8)) as? [String: Any])
        #expect(deny["decision"] as? String == "deny", "\(outOfScope)")
        #expect((deny["rule"] as? String)?.contains("scopes.actions") == true, "\(outOfScope)")

        // Someone who is neither an admin nor an approver is refused every admin command.
        for command in [["status"], ["breakers"], ["policy", "check", "--agent", "refund-agent"]] {
            let (refused, out) = try await asNobody(d, command)
            #expect(refused == 2 && out.contains("FORBIDDEN"), "\(command): \(out)")
        }
        // Pending approvals name agents, actions, tenants and requesters: only admins and approvers see them.
        let (listedByNobody, nobodysList) = try await asNobody(d, ["approvals"])
        #expect(listedByNobody == 2 && nobodysList.contains("FORBIDDEN"), "\(nobodysList)")
        d.assertNoSecretsInLog()
    }

    /// `breakwater config check` runs the daemon's loaders with no daemon: a good config and its policy pass, a
    /// broken one fails with every error at its file:line, and no value from the file (a pasted key) is echoed.
    @Test func configCheck() async throws {
        let dir = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let policy = dir + "/policy.yaml"
        try GovernanceE2ETests.policy().write(toFile: policy, atomically: true, encoding: .utf8)
        let good = dir + "/breakwater.yaml"
        try """
            policy: \(policy)
            providers:
              fake:
                kind: openai
                base_url: http://127.0.0.1:9/v1
                api_key_env: BW_TEST_KEY
            routes:
              default:
                - {provider: fake, model: gpt-4o-mini}
              cheap:
                - {provider: fake, model: gpt-4o-mini}
            """.write(toFile: good, atomically: true, encoding: .utf8)
        func check(_ args: [String], environment: [String: String] = [:]) async throws -> (Int32?, String) {
            let p = try ChildProcess(binDir + "/breakwater", ["config", "check"] + args, environment: environment,
                                     logPath: dir + "/cli-\(UUID().uuidString).log")
            return (try await p.waitForExit(), p.output)
        }

        let (ok, out) = try await check([good])
        #expect(ok == 0, "\(out)")
        #expect(out.contains("\(good): OK (1 providers, 2 routes)"), "\(out)")
        #expect(out.contains("\(policy): OK (6 agents)"), "\(out)")
        // With no FILE: systemd's $CONFIGURATION_DIRECTORY/breakwater.yaml.
        let (byDefault, defaultOut) = try await check([], environment: ["CONFIGURATION_DIRECTORY": dir])
        #expect(byDefault == 0 && defaultOut.contains("\(good): OK"), "\(defaultOut)")
        let (_, json) = try await check([good, "--json"])
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], "\(json)")
        #expect(o["ok"] as? Bool == true && o["file"] as? String == good, "\(json)")
        #expect(o["providers"] as? Int == 1 && o["routes"] as? Int == 2 && (o["errors"] as? [Any])?.isEmpty == true)
        let p = try #require(o["policy"] as? [String: Any], "\(json)")
        #expect(p["ok"] as? Bool == true && p["file"] as? String == policy && p["agents"] as? Int == 6, "\(json)")

        // A key pasted into the config (line 5) and an unknown kind (line 3).
        let pasted = "sk-pasted-key-must-not-be-echoed-42"
        let broken = dir + "/broken.yaml"
        try """
            providers:
              fake:
                kind: openia
                base_url: http://127.0.0.1:9/v1
                api_key: \(pasted)
            routes:
              default:
                - {provider: fake, model: gpt-4o-mini}
            """.write(toFile: broken, atomically: true, encoding: .utf8)
        let (failed, errors) = try await check([broken])
        #expect(failed == 1, "\(errors)")
        #expect(errors.contains("\(broken):3:") && errors.contains("unknown kind"), "\(errors)")
        #expect(errors.contains("\(broken):5:") && errors.contains("API keys never go in the config file"), "\(errors)")
        #expect(!errors.contains("OK"), "\(errors)")
        let (failedJSON, brokenJSON) = try await check([broken, "--json"])
        #expect(failedJSON == 1)
        let b = try #require(try JSONSerialization.jsonObject(with: Data(brokenJSON.utf8)) as? [String: Any])
        #expect(b["ok"] as? Bool == false, "\(brokenJSON)")
        let lines = (b["errors"] as? [[String: Any]] ?? []).compactMap { $0["line"] as? Int }
        #expect(lines.contains(3) && lines.contains(5), "\(brokenJSON)")
        #expect(!errors.contains(pasted) && !brokenJSON.contains(pasted), "a value from the file was echoed")

        // A good config naming a broken policy: the config passes, the policy's error is at its line, exit 1.
        let brokenPolicy = dir + "/broken-policy.yaml"
        try "anonymous: deny\nagents: [not, a, mapping]\n"
            .write(toFile: brokenPolicy, atomically: true, encoding: .utf8)
        let (policyFailed, policyErrors) = try await check([good, "--policy", brokenPolicy])
        #expect(policyFailed == 1, "\(policyErrors)")
        #expect(policyErrors.contains("\(good): OK") && policyErrors.contains("\(brokenPolicy):2:"), "\(policyErrors)")
        // A file that is not there is an error too, never a silent OK.
        let (missing, missingOut) = try await check([dir + "/nope.yaml"])
        #expect(missing == 1 && missingOut.contains("nope.yaml"), "\(missingOut)")
    }

    /// Runs the CLI against `d` and returns its exit status and everything it printed.
    func cli(_ d: DaemonUnderTest, _ args: [String]) async throws -> (Int32?, String) {
        let p = try ChildProcess(binDir + "/breakwater", args + ["--socket", d.socket],
                                 logPath: d.dir + "/cli-\(UUID().uuidString).log")
        return (try await p.waitForExit(), p.output)
    }

    /// Runs the CLI as uid/gid 65534 (neither an admin nor an approver). The CLI is copied next to the socket so
    /// that user can run it wherever the build tree lives.
    func asNobody(_ d: DaemonUnderTest, _ args: [String]) async throws -> (Int32?, String) {
        chmod(d.dir, 0o755)
        chmod(d.socket, 0o666)
        let cli = d.dir + "/breakwater"
        if !FileManager.default.fileExists(atPath: cli) {
            try FileManager.default.copyItem(atPath: binDir + "/breakwater", toPath: cli)
            chmod(cli, 0o755)
        }
        let setpriv = "/usr/bin/setpriv"
        try #require(FileManager.default.isExecutableFile(atPath: setpriv))
        let p = try ChildProcess(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", cli]
                                     + args + ["--socket", d.socket],
                                 logPath: d.dir + "/nobody-\(UUID().uuidString).log")
        return (try await p.waitForExit(), p.output)
    }
}
