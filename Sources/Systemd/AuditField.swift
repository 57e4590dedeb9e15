/// The name of one journal field an audit event may carry.
///
/// The set is closed: every field is a constant declared here, so no event can grow a slot for a prompt, a
/// completion, a credential or an API key without a change to this file. journald silently drops fields whose
/// names are not `[A-Z0-9_]`, start with `_` or a digit, or are longer than 64 bytes; every name is checked when
/// it is declared (a bad one is a programming error that traps, and the tests touch every constant).
public struct AuditField: Hashable, Sendable, CustomStringConvertible {
    /// The journal field name, e.g. `REQUEST_ID`.
    public let name: String
    /// Whether only the writer sets it (`MESSAGE`, `MESSAGE_ID`, `PRIORITY`, `SYSLOG_IDENTIFIER`, `AUDIT_KIND`):
    /// a flag, so the check on every field an event sets is a load, not a set lookup that hashes the name.
    let isWriterOwned: Bool
    /// The name's FNV-1a hash, made once: two fields with different names almost always differ here, so telling
    /// fields apart (an event's field lookup, on every field set) is one integer compare, not a string compare.
    private let fingerprint: UInt64

    /// Declares a field; `name` must be a valid journal field name.
    init(_ name: StaticString, writerOwned: Bool = false) {
        let text = name.description
        if let problem = AuditField.problem(with: text) {
            preconditionFailure("invalid journal field name \"\(text)\": \(problem)")
        }
        self.name = text
        isWriterOwned = writerOwned
        fingerprint = text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01b3 }
    }

    public var description: String { name }

    // A field is its name (the flag follows from it).
    public static func == (a: AuditField, b: AuditField) -> Bool {
        a.fingerprint == b.fingerprint && a.name == b.name
    }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }

    /// Checks `name` against journald's rules for fields a client may set.
    ///
    /// Throws `AuditFieldNameError` saying which rule `name` breaks; returns normally when journald would keep
    /// the field.
    public static func validate(_ name: String) throws(AuditFieldNameError) {
        if let problem = problem(with: name) { throw AuditFieldNameError(name: name, problem: problem) }
    }

    /// The most bytes journald accepts in a field name.
    public static let maximumNameLength = 64

    static func problem(with name: String) -> String? {
        let bytes = Array(name.utf8)
        guard let first = bytes.first else { return "empty" }
        if bytes.count > maximumNameLength { return "longer than \(maximumNameLength) characters" }
        if first == UInt8(ascii: "_") { return "starts with '_' (reserved for fields journald sets itself)" }
        if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) { return "starts with a digit" }
        for byte in bytes {
            let upper = (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            let digit = (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            if !(upper || digit || byte == UInt8(ascii: "_")) { return "only A-Z, 0-9 and '_' are allowed" }
        }
        return nil
    }
}

/// A field name journald would drop. Raised by `AuditField.validate(_:)`.
public struct AuditFieldNameError: Error, Equatable, CustomStringConvertible {
    /// The rejected name.
    public let name: String
    /// Which rule it breaks.
    public let problem: String

    public var description: String { "invalid journal field name \"\(name)\": \(problem)" }
}

extension AuditField {
    // MARK: Fields the writer sets on every entry

    /// The one-line summary journalctl shows.
    public static let message = AuditField("MESSAGE", writerOwned: true)
    /// The 128-bit id of the event kind, which the catalog explains.
    public static let messageID = AuditField("MESSAGE_ID", writerOwned: true)
    /// The syslog priority, 0 (emerg) to 7 (debug).
    public static let priority = AuditField("PRIORITY", writerOwned: true)
    /// `breakwaterd`, so `journalctl -t breakwaterd` shows the audit trail.
    public static let syslogIdentifier = AuditField("SYSLOG_IDENTIFIER", writerOwned: true)
    /// The event kind in words (`policy_decision`), for readers who do not know the ids by heart.
    public static let auditKind = AuditField("AUDIT_KIND", writerOwned: true)

    // MARK: Common fields

    /// The daemon's id for the call the event belongs to.
    public static let requestID = AuditField("REQUEST_ID")
    /// The agent (principal) that made the call.
    public static let agent = AuditField("AGENT")
    /// The tenant the agent acts for.
    public static let tenant = AuditField("TENANT")
    /// The action the call performs, e.g. `refund.issue`.
    public static let action = AuditField("ACTION")
    /// `allow`, `deny` or `pending`.
    public static let decision = AuditField("DECISION")
    /// The policy rule that decided.
    public static let rule = AuditField("RULE")
    /// Why, in words or as a short code (never the secret that failed to match).
    public static let reason = AuditField("REASON")
    /// The upstream provider's name from the config.
    public static let provider = AuditField("PROVIDER")
    /// The model asked of the provider.
    public static let model = AuditField("MODEL")
    /// The route the call took.
    public static let route = AuditField("ROUTE")
    /// The attempt number within the call, from 1.
    public static let attempt = AuditField("ATTEMPT")
    /// The upstream HTTP status, when there was one.
    public static let status = AuditField("STATUS")
    /// The resilience engine's class for a failure (`rate_limited`, `server_error`, `timeout`, ...).
    public static let errorClass = AuditField("ERROR_CLASS")
    /// How long the step took, in milliseconds.
    public static let latencyMilliseconds = AuditField("LATENCY_MS")
    /// The caller's uid, from SO_PEERCRED.
    public static let peerUID = AuditField("PEER_UID")
    /// The caller's gid, from SO_PEERCRED.
    public static let peerGID = AuditField("PEER_GID")
    /// The caller's pid, from SO_PEERCRED.
    public static let peerPID = AuditField("PEER_PID")
    /// The client name the app gave in HELLO.
    public static let clientName = AuditField("CLIENT_NAME")

    // MARK: Identity

    /// The id of the credential presented (its name in the policy, never the token itself).
    public static let credentialID = AuditField("CREDENTIAL_ID")

    // MARK: Approvals

    /// The approval queue's id for the pending call.
    public static let approvalID = AuditField("APPROVAL_ID")
    /// The uid of the admin who approved or denied.
    public static let approverUID = AuditField("APPROVER_UID")
    /// How long the call waited for a decision, in milliseconds.
    public static let waitedMilliseconds = AuditField("WAITED_MS")
    /// How long the call may wait before the approval expires, in milliseconds.
    public static let timeoutMilliseconds = AuditField("TIMEOUT_MS")

    // MARK: Actions

    /// The SHA-256 of an action's canonical JSON arguments: what an approval is bound to.
    public static let argumentHash = AuditField("ARGUMENT_HASH")
    /// The argument fields the policy shows (`show_arguments`), as a JSON object; the others are never recorded.
    public static let shownArguments = AuditField("SHOWN_ARGUMENTS")
    /// The id an allowed action is given, for the app's own logs.
    public static let decisionID = AuditField("DECISION_ID")
    /// A tool (function) name from a request's `tools` or an answer's `tool_calls`.
    public static let toolName = AuditField("TOOL_NAME")

    // MARK: Limits and budgets

    /// The limit that refused, as configured (`1/min`, `4 in flight`).
    public static let limit = AuditField("LIMIT")
    /// How long the caller should wait before trying again, in milliseconds.
    public static let retryAfterMilliseconds = AuditField("RETRY_AFTER_MS")
    /// Whose budget: `agent` or `tenant`.
    public static let budgetScope = AuditField("BUDGET_SCOPE")
    /// The calendar window: `day` or `month`.
    public static let budgetWindow = AuditField("BUDGET_WINDOW")
    /// What the budget counts: `tokens` or `cost`.
    public static let budgetUnit = AuditField("BUDGET_UNIT")
    /// The budget's limit in its unit.
    public static let budgetLimit = AuditField("BUDGET_LIMIT")
    /// What the window has used so far, in the budget's unit.
    public static let budgetUsed = AuditField("BUDGET_USED")
    /// What the refused call would have reserved, in the budget's unit.
    public static let budgetRequested = AuditField("BUDGET_REQUESTED")

    // MARK: Resilience

    /// The pause before the next attempt, in milliseconds.
    public static let delayMilliseconds = AuditField("DELAY_MS")
    /// The route step given up (`provider/model`).
    public static let fallbackFrom = AuditField("FALLBACK_FROM")
    /// The route step tried next (`provider/model`).
    public static let fallbackTo = AuditField("FALLBACK_TO")
    /// Which breaker moved (usually the provider, or `provider/model`).
    public static let breaker = AuditField("BREAKER")
    /// The breaker's state before: `closed`, `open` or `half_open`.
    public static let breakerFrom = AuditField("BREAKER_FROM")
    /// The breaker's state after: `closed`, `open` or `half_open`.
    public static let breakerTo = AuditField("BREAKER_TO")
    /// The failure rate observed, as a fraction (`0.42`).
    public static let failureRate = AuditField("FAILURE_RATE")
    /// The configured threshold it crossed, as a fraction.
    public static let failureRateThreshold = AuditField("FAILURE_RATE_THRESHOLD")
    /// How many calls the rate was measured over.
    public static let sampleCount = AuditField("SAMPLES")

    // MARK: Completion

    /// How the call ended: `ok`, `error` or `cancelled`.
    public static let outcome = AuditField("OUTCOME")
    /// How many upstream attempts the call made in all.
    public static let attempts = AuditField("ATTEMPTS")
    /// Prompt size as a count of tokens the provider reported (a number, never the text).
    public static let inputTokens = AuditField("INPUT_TOKENS")
    /// Completion size as a count of tokens the provider reported (a number, never the text).
    public static let outputTokens = AuditField("OUTPUT_TOKENS")
    /// What the call cost, in millionths of the price table's currency unit.
    public static let costMicros = AuditField("COST_MICROS")

    // MARK: The cluster store

    /// Which cluster store (`redis://host:port/db` or `unix://path`; never a password).
    public static let clusterStore = AuditField("CLUSTER_STORE")
    /// How many daemons the store last counted alive.
    public static let liveDaemons = AuditField("LIVE_DAEMONS")
    /// The share of each cluster limit this daemon takes while the store is down, as a fraction.
    public static let fallbackShare = AuditField("FALLBACK_SHARE")
    /// How long the store was unreachable.
    public static let degradedMilliseconds = AuditField("DEGRADED_MS")

    // MARK: The writer's own loss report

    /// Entries dropped because the writer's queue was full, since the writer started.
    public static let droppedCount = AuditField("DROPPED")
    /// Entries journald did not take, since the writer started.
    public static let unwrittenCount = AuditField("UNWRITTEN")

    /// Every field declared above, in the order an entry lists them.
    public static let all: [AuditField] = [
        message, messageID, priority, syslogIdentifier, auditKind,
        requestID, agent, tenant, action, decision, rule, reason, provider, model, route, attempt, status,
        errorClass, latencyMilliseconds, peerUID, peerGID, peerPID, clientName,
        credentialID,
        approvalID, approverUID, waitedMilliseconds, timeoutMilliseconds,
        argumentHash, shownArguments, decisionID, toolName,
        limit, retryAfterMilliseconds, budgetScope, budgetWindow, budgetUnit, budgetLimit, budgetUsed,
        budgetRequested,
        delayMilliseconds, fallbackFrom, fallbackTo, breaker, breakerFrom, breakerTo, failureRate,
        failureRateThreshold, sampleCount,
        outcome, attempts, inputTokens, outputTokens, costMicros,
        clusterStore, liveDaemons, fallbackShare, degradedMilliseconds,
        droppedCount, unwrittenCount,
    ]
}
