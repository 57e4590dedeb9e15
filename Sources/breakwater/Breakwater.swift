import ArgumentParser
import BreakwaterClient
import Foundation

/// `breakwater`: the admin and developer CLI.
@main
struct Breakwater: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakwater",
        abstract: "Talk to breakwaterd: send calls, administer it, check its config, run the demo.",
        subcommands: [Call.self, Authorize.self, Status.self, Breakers.self, Breaker.self, Approvals.self, Approve.self, Deny.self,
                      Policy.self, ConfigCommand.self, Demo.self]
    )
}

/// Options shared by commands that talk to a daemon.
struct SocketOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's socket (default: $BREAKWATER_SOCKET, else the system socket).")
    var socket: String?

    var path: String {
        if let socket { return socket }
        let env = ProcessInfo.processInfo.environment
        if let s = env["BREAKWATER_SOCKET"] { return s }
        if getuid() != 0, let dir = env["XDG_RUNTIME_DIR"] { return dir + "/breakwater.sock" }
        return "/run/breakwater/breakwater.sock"
    }
}

/// Builds an OpenAI chat-completions body with one user message.
func chatBody(_ message: String, maxTokens: Int? = nil) -> [UInt8] {
    var body: [String: Any] = ["messages": [["role": "user", "content": message]]]
    if let maxTokens { body["max_tokens"] = maxTokens }
    return Array(try! JSONSerialization.data(withJSONObject: body))
}

/// The assistant text of a `chat.completion` (or the delta text of a `chat.completion.chunk`).
func assistantText(_ json: [UInt8]) -> String? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any],
          let choice = (object["choices"] as? [[String: Any]])?.first else { return nil }
    let part = (choice["message"] ?? choice["delta"]) as? [String: Any]
    return part?["content"] as? String
}

struct Call: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send one chat call through the daemon.")

    @OptionGroup var socketOptions: SocketOptions
    // The agent token comes from $BREAKWATER_TOKEN and a step-up token from $BREAKWATER_STEP_UP_TOKEN, never from
    // arguments: those show in `ps`.
    @Option(help: "Route name.") var route = "default"
    @Option(help: "The user message.") var message: String?
    @Option(help: "A file holding a whole OpenAI chat-completions request body (JSON).") var bodyFile: String?
    @Flag(help: "Stream the answer, printing pieces as they arrive.") var stream = false
    @Flag(help: "Print the raw JSON answer instead of the assistant text.") var raw = false
    @Option(help: "Deadline for the whole call, in milliseconds.") var timeoutMs: UInt32?
    @Option(help: "The action the call performs (checked by policy), e.g. invoice.create.") var action: String?
    @Option(help: "The tenant the call acts for (checked by policy).") var tenant: String?

    func run() async throws {
        let body: [UInt8]
        if let bodyFile {
            body = Array(try Data(contentsOf: URL(fileURLWithPath: bodyFile)))
        } else if let message {
            body = chatBody(message)
        } else {
            throw ValidationError("give --message or --body-file")
        }
        let client = BreakwaterClient(socketPath: socketOptions.path,
                                      credential: ProcessInfo.processInfo.environment["BREAKWATER_TOKEN"],
                                      clientName: "breakwater-cli")
        let notice: @Sendable (CallNotice) -> Void = { n in
            FileHandle.standardError.write(Data("breakwater: waiting: \(n.message)\n".utf8))
        }
        let stepUp = ProcessInfo.processInfo.environment["BREAKWATER_STEP_UP_TOKEN"]
        do {
            if stream {
                let s = try await client.stream(route: route, body: body, timeoutMs: timeoutMs, action: action,
                                                tenant: tenant, stepUpToken: stepUp, onNotice: notice)
                for try await chunk in s {
                    if raw { print(String(decoding: chunk, as: UTF8.self)) } else {
                        FileHandle.standardOutput.write(Data((assistantText(chunk) ?? "").utf8))
                    }
                }
                if !raw { print() }
                report(s.head, s.trailers)
            } else {
                let r = try await client.send(route: route, body: body, timeoutMs: timeoutMs, action: action,
                                              tenant: tenant, stepUpToken: stepUp, onNotice: notice)
                print(raw ? String(decoding: r.body, as: UTF8.self) : (assistantText(r.body) ?? ""))
                report(r.head, r.trailers)
            }
        } catch let error as BreakwaterError {
            FileHandle.standardError.write(Data("breakwater: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    func report(_ head: CallResponse, _ trailers: CallTrailers?) {
        var line = "[\(head.provider)/\(head.model) status \(head.status), attempts \(head.attempts), "
            + "request \(head.requestID)"
        if let t = trailers?.totalTokens { line += ", \(t) tokens" }
        FileHandle.standardError.write(Data((line + "]\n").utf8))
    }
}

/// `breakwater authorize`: for shell tools, the question an app asks before it executes an action.
struct Authorize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask whether the agent may perform an action now (exit 0: allowed; 3: refused).",
        discussion: """
            The agent token comes from $BREAKWATER_TOKEN and a step-up token from $BREAKWATER_STEP_UP_TOKEN. When \
            the policy wants an approval, this waits (printing the approval id on stderr) until an approver \
            decides or it expires. On success prints the decision as JSON: decision_id, rule, argument_hash, and \
            approval_id when a person approved.
            """)

    @OptionGroup var socketOptions: SocketOptions
    @Option(help: "The action, e.g. refund.issue.") var action: String
    @Option(help: "The tenant it acts for.") var tenant: String?
    @Option(help: "The action's arguments, a JSON object (default {}).") var arguments = "{}"
    @Option(help: "How long to wait at most (an approval included), in milliseconds.") var timeoutMs: UInt32?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let client = BreakwaterClient(socketPath: socketOptions.path, credential: environment["BREAKWATER_TOKEN"],
                                      clientName: "breakwater-cli")
        let notice: @Sendable (CallNotice) -> Void = { n in
            FileHandle.standardError.write(Data("breakwater: waiting: \(n.message)\n".utf8))
        }
        do {
            let d = try await client.authorize(action: action, tenant: tenant, arguments: Array(arguments.utf8),
                                               stepUpToken: environment["BREAKWATER_STEP_UP_TOKEN"],
                                               timeoutMs: timeoutMs, onNotice: notice)
            var o: [String: Any] = ["decision": "allow", "decision_id": d.decisionID, "rule": d.rule,
                                    "argument_hash": d.argumentHash]
            if let a = d.approvalID { o["approval_id"] = a }
            let data = try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } catch {
            FileHandle.standardError.write(Data("breakwater: \(error)\n".utf8))
            throw ExitCode((error as? BreakwaterError)?.kind == .call ? 3 : 2)
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the daemon's live figures (admins only).")

    @OptionGroup var socketOptions: SocketOptions
    @Flag(help: "Print the JSON answer as it is.") var json = false

    func run() async throws {
        let client = BreakwaterClient(socketPath: socketOptions.path, clientName: "breakwater-cli")
        do {
            let answer = try await client.admin("status")
            if json {
                print(String(decoding: answer, as: UTF8.self))
                return
            }
            let o = (try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any]) ?? [:]
            for line in Self.lines(o) { print(line) }
        } catch {
            FileHandle.standardError.write(Data("breakwater: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

extension Status {
    /// The human form of the `status` answer: every field the daemon sends, known ones first in a fixed order,
    /// then any the daemon has grown since (so none is silently left out).
    static func lines(_ o: [String: Any]) -> [String] {
        func label(_ key: String) -> String { key.replacingOccurrences(of: "_", with: " ") }
        let counters = ["connections", "calls_in_flight", "calls", "calls_per_second", "calls_failed",
                        "calls_waiting_for_reader", "protocol_errors", "pending_approvals"]
        var out = counters.map { "\(label($0)): \(o[$0] ?? "-")" }
        let audit = o["audit"] as? [String: Any] ?? [:]
        if audit["enabled"] as? Bool == false {
            out.append("audit: off (the journal writer did not start; see the daemon log)")
        } else {
            out.append("audit: " + ["written", "unwritten", "dropped", "pending"]
                .map { "\(audit[$0] ?? "-") \($0)" }.joined(separator: ", "))
        }
        let open = o["open_breakers"] as? [[String: Any]] ?? []
        out.append("open breakers: \(open.isEmpty ? "none" : "\(open.count)")")
        for b in open { out.append("  \(b["target"] ?? "?")  reopens in \(b["reopens_in_ms"] ?? "?") ms") }
        // Calls in flight per provider against its max_connections (× max_concurrent_streams over HTTP/2).
        let pools = o["upstream_pools"] as? [[String: Any]] ?? []
        out.append("upstream pools:" + (pools.isEmpty ? " none" : ""))
        for p in pools {
            out.append("  \(p["provider"] ?? "?")  \(p["running"] ?? "?")/\(p["limit"] ?? "?") calls running, "
                + "\(p["waiting"] ?? "?") waiting for a connection (\(p["waited_total"] ?? "?") have waited)")
        }
        out += clusterLines(o["cluster"] as? [String: Any] ?? [:])
        let shown: Set = ["audit", "open_breakers", "upstream_pools", "cluster"]
        for key in o.keys.sorted() where !counters.contains(key) && !shown.contains(key) {
            out.append("\(label(key)): \(o[key] ?? "-")")
        }
        return out
    }
}

extension Status {
    /// The cluster store: where, whether it answers, and what this daemon holds of each cluster limit.
    static func clusterLines(_ c: [String: Any]) -> [String] {
        guard c["configured"] as? Bool != false, let store = c["store"] else { return ["cluster: none"] }
        var out: [String] = []
        if c["reachable"] as? Bool == true {
            out.append("cluster: \(store) reachable, \(c["live_daemons"] ?? "?") daemons alive")
        } else {
            out.append("cluster: \(store) UNREACHABLE for \(c["unreachable_for_ms"] ?? "?") ms: cluster limits on "
                + "this daemon's local share (\(c["fallback_share"] ?? "?") of each)")
        }
        for l in c["leases"] as? [[String: Any]] ?? [] {
            out.append("  \(l["provider"] ?? "?") key \(l["key"] ?? "?")  lease in hand: \(l["requests"] ?? "?") "
                + "requests, \(l["tokens"] ?? "?") tokens" + (l["local_share"] as? Bool == true ? " (local share)" : ""))
        }
        return out
    }
}

/// Runs one admin command and returns its JSON object, or exits with the daemon's error.
func adminCall(_ socket: String, _ command: String, _ arguments: [String: Any] = [:]) async throws -> [String: Any] {
    let client = BreakwaterClient(socketPath: socket, clientName: "breakwater-cli")
    do {
        let args = Array(try JSONSerialization.data(withJSONObject: arguments))
        let answer = try await client.admin(command, arguments: args)
        return (try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any]) ?? [:]
    } catch let error as BreakwaterError {
        FileHandle.standardError.write(Data("breakwater: \(error)\n".utf8))
        throw ExitCode(2)
    }
}

func printJSON(_ object: [String: Any]) {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
        ?? Data()
    print(String(decoding: data, as: UTF8.self))
}

struct Approvals: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List calls waiting for an approval.")
    @OptionGroup var socketOptions: SocketOptions
    @Flag(help: "Print the JSON answer as it is.") var json = false

    func run() async throws {
        let answer = try await adminCall(socketOptions.path, "approvals")
        if json { return printJSON(answer) }
        let pending = answer["pending"] as? [[String: Any]] ?? []
        if pending.isEmpty { return print("no calls are waiting for an approval") }
        print("ID".padding(toLength: 18, withPad: " ", startingAt: 0) + "AGENT".padding(toLength: 20, withPad: " ",
              startingAt: 0) + "ACTION".padding(toLength: 18, withPad: " ", startingAt: 0)
              + "TENANT".padding(toLength: 12, withPad: " ", startingAt: 0) + "ARGUMENTS")
        for p in pending {
            // An action's approval shows the fields the policy marks (show_arguments); the rest are redacted.
            var arguments = "-"
            if let shown = p["arguments"] as? [String: String] {
                arguments = (shown.keys.sorted().map { "\($0)=\(shown[$0]!)" } + ["(others redacted)"])
                    .joined(separator: " ")
            }
            print("\(p["id"] ?? "")".padding(toLength: 18, withPad: " ", startingAt: 0)
                + "\(p["agent"] ?? "")".padding(toLength: 20, withPad: " ", startingAt: 0)
                + "\(p["action"] ?? "-")".padding(toLength: 18, withPad: " ", startingAt: 0)
                + "\(p["tenant"] ?? "-")".padding(toLength: 12, withPad: " ", startingAt: 0) + arguments)
        }
    }
}

struct Approve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Approve a waiting call (policy approvers only).")
    @OptionGroup var socketOptions: SocketOptions
    @Argument(help: "The approval id (from `breakwater approvals`).") var id: String
    @Flag(help: "Print the JSON answer as it is.") var json = false

    func run() async throws {
        let answer = try await adminCall(socketOptions.path, "approve", ["id": id])
        if json { return printJSON(answer) }
        print("\(answer["id"] ?? id): \(answer["state"] ?? "?")")
    }
}

struct Deny: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Deny a waiting call (policy approvers only).")
    @OptionGroup var socketOptions: SocketOptions
    @Argument(help: "The approval id (from `breakwater approvals`).") var id: String
    @Option(help: "Why; the app sees it.") var reason = "denied by an approver"
    @Flag(help: "Print the JSON answer as it is.") var json = false

    func run() async throws {
        let answer = try await adminCall(socketOptions.path, "deny", ["id": id, "reason": reason])
        if json { return printJSON(answer) }
        print("\(answer["id"] ?? id): \(answer["state"] ?? "?")")
    }
}

struct Policy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Policy tools.", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Dry run: the decision the running daemon's policy makes, and the rule, without calling "
                + "anything.")
        @OptionGroup var socketOptions: SocketOptions
        @Option(help: "Agent id.") var agent: String
        @Option(help: "Action, e.g. refund.issue.") var action: String?
        @Option(help: "Tenant the call acts for.") var tenant: String?
        @Option(help: "Route.") var route = "default"
        @Option(help: "Model (default: the route's first target's).") var model: String?
        @Option(help: """
            An action's arguments (a JSON object): check the action as AUTHORIZE would ask it (no route or model), \
            with the hash an approval would bind, the fields an approver would see and any reusable approval.
            """) var arguments: String?
        @Option(help: "A tool (function) name: may the agent offer it to a model, and may a model's answer call it?")
        var tool: String?
        @Flag(help: "Print the JSON answer as it is.") var json = false

        func run() async throws {
            var args: [String: Any] = ["agent": agent, "route": route]
            if let tool { args["tool"] = tool }
            if let action { args["action"] = action }
            if let tenant { args["tenant"] = tenant }
            if let model { args["model"] = model }
            if let arguments {
                guard let object = try? JSONSerialization.jsonObject(with: Data(arguments.utf8)),
                      object is [String: Any] else {
                    throw ValidationError("--arguments must be a JSON object")
                }
                args["arguments"] = object
                args["route"] = nil
            }
            let answer = try await adminCall(socketOptions.path, "policy-check", args)
            if json { return printJSON(answer) }
            print("decision: \(answer["decision"] ?? "?")")
            print("rule: \(answer["rule"] ?? "?")")
            if tool != nil, let detail = answer["detail"] { print(detail) }
            if let hash = answer["argument_hash"] { print("argument hash: \(hash)") }
            if let shown = answer["shown_arguments"] as? [String: String] {
                print("an approver would see: " + (shown.keys.sorted().map { "\($0)=\(shown[$0]!)" }
                    + ["(others redacted)"]).joined(separator: " "))
            }
            if let reusable = answer["reusable_approval"] as? String {
                print("an earlier approval allows it again now: \(reusable)")
            }
            for line in answer["trace"] as? [String] ?? [] { print("  \(line)") }
        }
    }
}

struct Breakers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Circuit breakers: state, failure rate and reopen time per target (admins only).")
    @OptionGroup var socketOptions: SocketOptions
    @Flag(help: "Print the JSON answer as it is.") var json = false

    func run() async throws {
        let answer = try await adminCall(socketOptions.path, "breakers")
        if json { return printJSON(answer) }
        let list = answer["breakers"] as? [[String: Any]] ?? []
        if list.isEmpty { return print("no breaker has seen a call yet") }
        print("TARGET".padding(toLength: 36, withPad: " ", startingAt: 0) + "STATE".padding(toLength: 11,
              withPad: " ", startingAt: 0) + "FAILURES  CALLS  REOPENS IN")
        for b in list {
            let rate = (b["failure_rate"] as? Double).map { String(format: "%5.1f%%", $0 * 100) } ?? "-"
            let reopens = (b["reopens_in_ms"] as? Int).map { "\($0) ms" } ?? "-"
            print("\(b["target"] ?? "?")".padding(toLength: 36, withPad: " ", startingAt: 0)
                + "\(b["state"] ?? "?")".padding(toLength: 11, withPad: " ", startingAt: 0)
                + rate.padding(toLength: 10, withPad: " ", startingAt: 0)
                + "\(b["calls"] ?? 0)".padding(toLength: 7, withPad: " ", startingAt: 0) + reopens)
        }
    }
}

struct Breaker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Act on one circuit breaker.",
                                                    subcommands: [Reset.self])

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Close a breaker now (admins only).")
        @OptionGroup var socketOptions: SocketOptions
        @Argument(help: "The target, provider/model (see `breakwater breakers`).") var target: String
        @Flag(help: "Print the JSON answer as it is.") var json = false

        func run() async throws {
            let answer = try await adminCall(socketOptions.path, "breaker-reset", ["target": target])
            if json { return printJSON(answer) }
            print("\(answer["target"] ?? target): \(answer["state"] ?? "?")")
        }
    }
}
