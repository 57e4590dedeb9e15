/// One decision or step the daemon records in the journal: a kind plus fields from the closed `AuditField` set.
///
/// There is no field for prompts, completions, credentials or API keys, and every value is sanitised when it is
/// set: control characters are escaped (an entry can never carry a second line that reads like another field)
/// and long values are cut to `AuditEvent.maximumValueBytes`. Building an event is cheap; formatting the
/// journal entry happens later, on the writer's thread.
public struct AuditEvent: Sendable, Equatable {
    /// One field and its (sanitised) value.
    public struct Field: Sendable, Equatable {
        /// The field's name.
        public let field: AuditField
        /// The field's value, already sanitised.
        public let value: String
    }

    /// What the event records; decides the `MESSAGE_ID`.
    public let kind: AuditEventKind
    /// The event's own fields in the order they were set (the writer adds MESSAGE, MESSAGE_ID, PRIORITY,
    /// SYSLOG_IDENTIFIER and AUDIT_KIND).
    public private(set) var fields: [Field] = []
    private var priorityOverride: AuditPriority?

    /// The longest value kept, in UTF-8 bytes; longer values are cut and end in `…`.
    public static let maximumValueBytes = 512

    /// An event of `kind`. Kinds that are refusals by nature (approval denied or expired, step-up demanded,
    /// limit and budget refusals) start with `DECISION=deny`, a requested approval with `DECISION=pending` and a
    /// granted one with `DECISION=allow`.
    public init(_ kind: AuditEventKind, requestID: String? = nil) {
        self.kind = kind
        // A call's events carry 10-16 fields: one allocation instead of growing 1, 2, 4, 8, 16.
        fields.reserveCapacity(16)
        switch kind {
        case .approvalDenied, .approvalExpired, .stepUpDemanded, .rateLimitRefused, .concurrencyLimitRefused,
             .budgetRefused, .actionDenied, .toolCallBlocked:
            decision = .deny
        case .actionAllowed, .approvalReused:
            decision = .allow
        case .approvalRequested:
            decision = .pending
        case .approvalGranted:
            decision = .allow
        default:
            break
        }
        self.requestID = requestID
    }

    /// The value of `field`, or nil. Setting a value sanitises it; setting nil removes the field.
    ///
    /// The fields the writer owns (`MESSAGE`, `MESSAGE_ID`, `PRIORITY`, `SYSLOG_IDENTIFIER`, `AUDIT_KIND`)
    /// cannot be set here: doing so is a programming error and traps.
    public subscript(field: AuditField) -> String? {
        get { fields.first { $0.field == field }?.value }
        set { store(field, newValue.map(AuditEvent.sanitised)) }
    }

    /// Sets a numeric field (counts, ids, milliseconds).
    public mutating func set(_ field: AuditField, _ value: some BinaryInteger) {
        store(field, String(value))  // digits and a sign: nothing to sanitise
    }

    /// Sets `field` to `value`, already sanitised, or removes it.
    private mutating func store(_ field: AuditField, _ value: String?) {
        precondition(!field.isWriterOwned, "\(field) is set by the audit writer")
        let index = fields.firstIndex { $0.field == field }
        switch (index, value) {
        case (let i?, let value?): fields[i] = Field(field: field, value: value)
        case (nil, let value?): fields.append(Field(field: field, value: value))
        case (let i?, nil): fields.remove(at: i)
        case (nil, nil): break
        }
    }

    /// The syslog priority the entry gets. By default: `err` for the writer's own loss reports, `warning` for a
    /// breaker opening and a failure-rate alert, `notice` for any `DECISION=deny`, and `info` for the rest.
    /// Setting it overrides the default.
    public var priority: AuditPriority {
        get {
            if let priorityOverride { return priorityOverride }
            switch kind {
            case .auditLoss: return .error
            case .failureRateAlert, .clusterDegraded: return .warning
            case .clusterRestored: return .notice
            case .breakerTransition where breakerTo == .open: return .warning
            default: return decision == .deny ? .notice : .info
            }
        }
        set { priorityOverride = newValue }
    }
}

// MARK: - Typed access to the common fields

extension AuditEvent {
    /// `REQUEST_ID`.
    public var requestID: String? {
        get { self[.requestID] }
        set { self[.requestID] = newValue }
    }

    /// `AGENT`.
    public var agent: String? {
        get { self[.agent] }
        set { self[.agent] = newValue }
    }

    /// `TENANT`.
    public var tenant: String? {
        get { self[.tenant] }
        set { self[.tenant] = newValue }
    }

    /// `ACTION`.
    public var action: String? {
        get { self[.action] }
        set { self[.action] = newValue }
    }

    /// `DECISION`.
    public var decision: AuditDecision? {
        get { self[.decision].flatMap(AuditDecision.init(rawValue:)) }
        set { self[.decision] = newValue?.rawValue }
    }

    /// `RULE`.
    public var rule: String? {
        get { self[.rule] }
        set { self[.rule] = newValue }
    }

    /// `REASON`. A short explanation or code; never the value that failed a check.
    public var reason: String? {
        get { self[.reason] }
        set { self[.reason] = newValue }
    }

    /// `PROVIDER`.
    public var provider: String? {
        get { self[.provider] }
        set { self[.provider] = newValue }
    }

    /// `MODEL`.
    public var model: String? {
        get { self[.model] }
        set { self[.model] = newValue }
    }

    /// `ATTEMPT`, from 1.
    public var attempt: Int? {
        get { self[.attempt].flatMap { Int($0) } }
        set { self[.attempt] = newValue.map { String($0) } }
    }

    /// `STATUS`, the upstream HTTP status.
    public var status: Int? {
        get { self[.status].flatMap { Int($0) } }
        set { self[.status] = newValue.map { String($0) } }
    }

    /// `ERROR_CLASS`.
    public var errorClass: String? {
        get { self[.errorClass] }
        set { self[.errorClass] = newValue }
    }

    /// `LATENCY_MS`, rounded down to whole milliseconds.
    public var latency: Duration? {
        get { self[.latencyMilliseconds].flatMap { Int64($0) }.map { .milliseconds($0) } }
        set { self[.latencyMilliseconds] = newValue.map { String(AuditEvent.milliseconds($0)) } }
    }

    /// `PEER_UID`, `PEER_GID` and `PEER_PID` together.
    public var peer: AuditPeer? {
        get {
            guard let uid = self[.peerUID].flatMap({ UInt32($0) }), let gid = self[.peerGID].flatMap({ UInt32($0) }),
                  let pid = self[.peerPID].flatMap({ Int32($0) }) else { return nil }
            return AuditPeer(uid: uid, gid: gid, pid: pid)
        }
        set {
            self[.peerUID] = newValue.map { String($0.uid) }
            self[.peerGID] = newValue.map { String($0.gid) }
            self[.peerPID] = newValue.map { String($0.pid) }
        }
    }

    /// `BREAKER_FROM`.
    public var breakerFrom: AuditBreakerState? {
        get { self[.breakerFrom].flatMap(AuditBreakerState.init(rawValue:)) }
        set { self[.breakerFrom] = newValue?.rawValue }
    }

    /// `BREAKER_TO`; a move to `open` makes the entry a warning.
    public var breakerTo: AuditBreakerState? {
        get { self[.breakerTo].flatMap(AuditBreakerState.init(rawValue:)) }
        set { self[.breakerTo] = newValue?.rawValue }
    }

    /// `OUTCOME`, for `callCompleted`.
    public var outcome: AuditOutcome? {
        get { self[.outcome].flatMap(AuditOutcome.init(rawValue:)) }
        set { self[.outcome] = newValue?.rawValue }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

// MARK: - Sanitising

extension AuditEvent {
    /// `value` as one line of at most `maximumValueBytes` UTF-8 bytes: control characters and Unicode line
    /// separators are written as escapes (`\n`, `\x1b`, `\u2028`), and a value cut short ends in `…`.
    public static func sanitised(_ value: String) -> String {
        if isClean(value) { return value }
        let ellipsis = "…"
        let budget = maximumValueBytes - ellipsis.utf8.count
        var out = ""
        out.reserveCapacity(min(value.utf8.count, maximumValueBytes))
        var used = 0
        // The output as it was before it first went past `budget`: where a cut happens, if one is needed.
        var cutPoint: String?
        for scalar in value.unicodeScalars {
            let piece = escaped(scalar)
            let size = piece.utf8.count
            if used + size > maximumValueBytes { return (cutPoint ?? out) + ellipsis }
            if used + size > budget, cutPoint == nil { cutPoint = out }
            out += piece
            used += size
        }
        return out
    }

    /// Whether `value` needs no change: short enough, no control byte, no line separator. One pass over the
    /// bytes; only a value with non-ASCII bytes is looked at again, as scalars, for the separators.
    private static func isClean(_ value: String) -> Bool {
        guard value.utf8.count <= maximumValueBytes else { return false }
        let verdict: (control: Bool, ascii: Bool) = value.utf8.withContiguousStorageIfAvailable { bytes in
            var high: UInt8 = 0
            for byte in bytes {
                if byte < 0x20 || byte == 0x7F { return (control: true, ascii: false) }
                high |= byte
            }
            return (control: false, ascii: high < 0x80)
        } ?? (control: value.utf8.contains { $0 < 0x20 || $0 == 0x7F }, ascii: false)
        if verdict.control { return false }
        return verdict.ascii || !value.unicodeScalars.contains(where: isLineSeparator)
    }

    private static func isLineSeparator(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value == 0x85 || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    private static func escaped(_ scalar: Unicode.Scalar) -> String {
        switch scalar.value {
        case 0x0A: return "\\n"
        case 0x0D: return "\\r"
        case 0x09: return "\\t"
        case 0..<0x20, 0x7F: return "\\x" + hex(scalar.value, digits: 2)
        case 0x85, 0x2028, 0x2029: return "\\u" + hex(scalar.value, digits: 4)
        default: return String(Character(scalar))
        }
    }

    private static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}

/// The syslog priority of a journal entry (`PRIORITY=`).
public enum AuditPriority: Int, Sendable, Comparable, CaseIterable {
    case emergency = 0, alert, critical, error, warning, notice, info, debug

    /// Lower numbers are more severe, as in syslog.
    public static func < (lhs: AuditPriority, rhs: AuditPriority) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The `DECISION` field.
public enum AuditDecision: String, Sendable, CaseIterable {
    /// The call (or identity) was accepted.
    case allow
    /// The call was refused; the entry is logged at `notice`.
    case deny
    /// The call waits for someone else's decision (an approval).
    case pending
}

/// The caller's credentials from SO_PEERCRED.
public struct AuditPeer: Sendable, Equatable {
    /// The caller's user id.
    public var uid: UInt32
    /// The caller's group id.
    public var gid: UInt32
    /// The caller's process id.
    public var pid: Int32

    /// Credentials as SO_PEERCRED reported them.
    public init(uid: UInt32, gid: UInt32, pid: Int32) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}

/// A circuit breaker's state, spelled as the Resilience engine spells it (`half_open`).
public enum AuditBreakerState: String, Sendable, CaseIterable {
    /// Calls flow.
    case closed
    /// Calls are refused without trying the provider.
    case open
    /// A few probe calls test whether the provider recovered.
    case halfOpen = "half_open"
}

/// How a call ended (`OUTCOME`).
public enum AuditOutcome: String, Sendable, CaseIterable {
    /// The app got an answer.
    case ok
    /// The app got an error.
    case error
    /// The app cancelled or went away.
    case cancelled
}
