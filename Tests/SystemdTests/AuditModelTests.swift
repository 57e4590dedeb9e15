@testable import Systemd
import Testing

/// The audit event model without a journald: field names, MESSAGE_IDs, priorities, sanitising, the entry's items.
@Suite struct AuditModelTests {
    @Test func everyDeclaredFieldNameIsOneJournaldKeeps() throws {
        #expect(AuditField.all.count == Set(AuditField.all).count, "a field is listed twice")
        for field in AuditField.all {
            try AuditField.validate(field.name)
        }
    }

    @Test(arguments: [
        ("agent", "only A-Z"),
        ("Agent", "only A-Z"),
        ("_AGENT", "starts with '_'"),
        ("__CURSOR", "starts with '_'"),
        ("1ST_ATTEMPT", "starts with a digit"),
        ("REQUEST-ID", "only A-Z"),
        ("REQUEST ID", "only A-Z"),
        ("ÄGENT", "only A-Z"),
        ("", "empty"),
        (String(repeating: "A", count: 65), "longer than 64"),
    ])
    func badFieldNamesAreRejected(name: String, problem: String) {
        #expect {
            try AuditField.validate(name)
        } throws: { error in
            (error as? AuditFieldNameError)?.problem.contains(problem) == true
        }
    }

    @Test func longestNameIsAccepted() throws {
        try AuditField.validate(String(repeating: "A", count: 64))
        try AuditField.validate("A1_")
    }

    @Test func declaringABadFieldTraps() async {
        await #expect(processExitsWith: .failure) {
            _ = AuditField("lower_case")
        }
    }

    @Test func settingAWriterOwnedFieldTraps() async {
        await #expect(processExitsWith: .failure) {
            var event = AuditEvent(.policyDecision)
            event[.messageID] = "00000000000000000000000000000000"
        }
    }

    /// The model has no slot for secrets: no field is named for prompts, completions, keys or credentials, and
    /// the only names mentioning tokens are usage counts.
    @Test func noFieldIsMeantForSecrets() {
        for field in AuditField.all {
            for word in ["PROMPT", "COMPLETION", "CONTENT", "KEY", "SECRET", "PASSWORD", "BEARER", "AUTHORIZATION"] {
                #expect(!field.name.contains(word), "\(field) looks like a field for secrets")
            }
            if field.name.contains("TOKEN") {
                #expect([AuditField.inputTokens, .outputTokens].contains(field))
            }
        }
    }

    @Test func messageIDsAreDistinctRandomID128s() {
        let ids = AuditEventKind.allCases.map(\.messageID)
        #expect(Set(ids).count == ids.count)
        for id in ids {
            let hex = Array(id.utf8)
            #expect(hex.count == 32)
            #expect(hex.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }, "\(id) is not lower-case hex")
            // systemd-id128 new makes v4 UUIDs: version nibble 4, variant 8-b.
            #expect(hex[12] == UInt8(ascii: "4"), "\(id) is not from systemd-id128 new")
            #expect("89ab".utf8.contains(hex[16]), "\(id) is not from systemd-id128 new")
        }
    }

    @Test func refusalKindsStartAsDenials() {
        for kind in [AuditEventKind.approvalDenied, .approvalExpired, .stepUpDemanded, .rateLimitRefused,
                     .concurrencyLimitRefused, .budgetRefused] {
            #expect(AuditEvent(kind).decision == .deny, "\(kind)")
            #expect(AuditEvent(kind).priority == .notice, "\(kind)")
        }
        #expect(AuditEvent(.approvalRequested).decision == .pending)
        #expect(AuditEvent(.approvalGranted).decision == .allow)
        #expect(AuditEvent(.policyDecision).decision == nil)
    }

    @Test func priorities() {
        var allow = AuditEvent(.policyDecision)
        allow.decision = .allow
        #expect(allow.priority == .info)
        var deny = AuditEvent(.identityCheck)
        deny.decision = .deny
        #expect(deny.priority == .notice)

        var opening = AuditEvent(.breakerTransition)
        opening.breakerFrom = .closed
        opening.breakerTo = .open
        #expect(opening.priority == .warning)
        var halfOpen = opening
        halfOpen.breakerFrom = .open
        halfOpen.breakerTo = .halfOpen
        #expect(halfOpen.priority == .info)

        #expect(AuditEvent(.failureRateAlert).priority == .warning)
        #expect(AuditEvent(.auditLoss).priority == .error)
        #expect(AuditEvent(.upstreamAttempt).priority == .info)

        var overridden = AuditEvent(.fallback)
        overridden.priority = .critical
        #expect(overridden.priority == .critical)
    }

    @Test func valuesCannotForgeFieldsOrLines() {
        var event = AuditEvent(.policyDecision)
        event.reason = "nope\nPRIORITY=0\nMESSAGE_ID=00000000000000000000000000000000"
        #expect(event.reason == "nope\\nPRIORITY=0\\nMESSAGE_ID=00000000000000000000000000000000")
        event.agent = "a\r\tb\u{0}c\u{1b}[31md\u{7f}"
        #expect(event.agent == "a\\r\\tb\\x00c\\x1b[31md\\x7f")
        event.tenant = "x\u{2028}y\u{85}z"
        #expect(event.tenant == "x\\u2028y\\u0085z")
        event.rule = "ünïcödé 🙂 stays"
        #expect(event.rule == "ünïcödé 🙂 stays")
    }

    @Test func longValuesAreCut() {
        let exact = String(repeating: "a", count: AuditEvent.maximumValueBytes)
        #expect(AuditEvent.sanitised(exact) == exact)
        let long = String(repeating: "é", count: AuditEvent.maximumValueBytes)
        let cut = AuditEvent.sanitised(long)
        #expect(cut.utf8.count <= AuditEvent.maximumValueBytes)
        #expect(cut.hasSuffix("…"))
        #expect(cut.dropLast().allSatisfy { $0 == "é" })
        let escapes = String(repeating: "\n", count: AuditEvent.maximumValueBytes)
        #expect(AuditEvent.sanitised(escapes).utf8.count <= AuditEvent.maximumValueBytes)
    }

    @Test func typedFieldsRoundTrip() {
        var event = AuditEvent(.callCompleted, requestID: "r-1")
        event.attempt = 3
        event.status = 503
        event.latency = .milliseconds(1234) + .microseconds(999)
        event.peer = AuditPeer(uid: 1000, gid: 100, pid: 4242)
        event.outcome = .ok
        event.set(.inputTokens, 12)
        #expect(event[.latencyMilliseconds] == "1234")
        #expect(event.latency == .milliseconds(1234))
        #expect(event.peer == AuditPeer(uid: 1000, gid: 100, pid: 4242))
        #expect(event[.peerUID] == "1000" && event[.peerGID] == "100" && event[.peerPID] == "4242")
        #expect(event.attempt == 3 && event.status == 503 && event.outcome == .ok && event[.inputTokens] == "12")
        event.peer = nil
        #expect(event[.peerUID] == nil && event.fields.count == 6)
    }

    @Test func entryItemsComeInAFixedOrderAsNameValuePairs() {
        var event = AuditEvent(.policyDecision, requestID: "r-7")
        event.agent = "refund-bot"
        event.action = "refund.issue"
        event.tenant = "acme"
        event.decision = .deny
        event.rule = "default-deny"
        let items = JournalEntryEncoder.items(of: event, syslogIdentifier: "breakwaterd")
        #expect(items.map(\.0.name) == ["MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "AUDIT_KIND",
                                       "REQUEST_ID", "AGENT", "ACTION", "TENANT", "DECISION", "RULE"])
        #expect(items[0].1 == "Policy denied refund.issue by agent refund-bot on tenant acme (rule default-deny) "
            + "[request r-7]")
        #expect(items[1].1 == AuditEventKind.policyDecision.messageID)
        #expect(items[2].1 == "5")
        #expect(items[4].1 == "policy_decision")
    }

    /// The datagram is journald's native format: `NAME=value` lines, and a value holding a newline (which sanitised
    /// values never do; only the writer's own items could) framed as `NAME`, newline, 64-bit little-endian length,
    /// the bytes, newline, so it stays one field.
    @Test func entriesAreJournaldsNativeFormat() {
        let event = AuditEvent(.callCompleted, requestID: "r-9")
        let plain = JournalEntryEncoder.datagram(of: event, syslogIdentifier: "breakwaterd")
        let lines = String(decoding: plain, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.last == "", "the entry ends with a newline")
        #expect(lines.dropLast().map { $0.split(separator: "=", maxSplits: 1).first.map(String.init) ?? "" }
            == JournalEntryEncoder.items(of: event, syslogIdentifier: "breakwaterd").map(\.0.name))
        #expect(lines.contains("SYSLOG_IDENTIFIER=breakwaterd") && lines.contains("REQUEST_ID=r-9"))

        let framed = JournalEntryEncoder.datagram(of: event, syslogIdentifier: "two\nlines")
        let item = Array("SYSLOG_IDENTIFIER\n".utf8) + [9, 0, 0, 0, 0, 0, 0, 0] + Array("two\nlines\n".utf8)
        #expect(framed.indices.contains { framed[$0...].starts(with: item) })
        #expect(!String(decoding: framed, as: UTF8.self).contains("SYSLOG_IDENTIFIER="))
    }

    @Test func everyKindHasAOneLineSummary() {
        for event in AuditEventSamples.all() {
            let summary = event.summary
            #expect(!summary.isEmpty)
            #expect(!summary.contains("\n"))
            #expect(!summary.contains("  "), "double space in \(summary)")
            #expect(summary.hasSuffix("[request \(event.requestID ?? "")]") || event.requestID == nil, "\(summary)")
        }
    }

    @Test func summariesReadWell() {
        let byKind = Dictionary(AuditEventSamples.all().map { ($0.kind, $0.summary) }) { a, _ in a }
        #expect(byKind[.identityCheck] == "Identity refused for agent refund-bot: token expired "
            + "(uid 1000, pid 4242) [request r-1]")
        #expect(byKind[.breakerTransition] == "Circuit breaker openai: closed -> open [request r-1]")
        #expect(byKind[.retry] == "Retrying openai/gpt-4o-mini after attempt 1 (rate_limited) in 250 ms "
            + "[request r-1]")
        #expect(byKind[.budgetRefused] == "Budget tenant day (tokens) refused refund.issue by agent refund-bot "
            + "on tenant acme: used 99000 of 100000, needs 4096 [request r-1]")
        #expect(byKind[.auditLoss] == "Audit entries lost: 3 dropped (queue full), 0 not taken by journald")
    }
}
