import Resilience

/// Calls waiting for a person to approve them (`require_approval`). A value-type state machine: the daemon keeps it
/// behind a lock, records every transition it returns in the audit trail, wakes the waiting call, and runs
/// `expire(now:)` when `nextDeadline` comes. Ids come from the caller (`apr-` and 64 random bits), so they cannot
/// be guessed.
public struct ApprovalQueue: Sendable {
    private var entries: [String: ApprovalRequest] = [:]
    /// Whether an approver may decide a call made from their own uid (the policy's `allow_self_approval`).
    public var allowSelfApproval: Bool

    public init(allowSelfApproval: Bool = false) {
        self.allowSelfApproval = allowSelfApproval
    }

    /// Queues a call the gate answered with `.requireApproval`.
    public mutating func request(id: String, request: AccessRequest, requester: PeerCredentials, rule: String,
                                 approvers: PeerSet, timeout: Duration, now: Instant, wallNow: Double,
                                 shownArguments: [String: String]? = nil) throws(ApprovalRefusal)
        -> ApprovalTransition {
        guard !id.isEmpty, entries[id] == nil else {
            throw ApprovalRefusal(code: .duplicateID, id: id, reason: "approval id \"\(id)\" is empty or already used")
        }
        let entry = ApprovalRequest(id: id, subject: ApprovalSubject(request: request, rule: rule,
                                                                     shownArguments: shownArguments),
                                    requester: requester, approvers: approvers, requestedAt: now,
                                    requestedAtWall: wallNow, deadline: now + timeout, state: .pending)
        entries[id] = entry
        return transition(entry, from: nil, by: requester,
                          reason: "\(rule) requires approval within \(timeout)", now: now)
    }

    /// An approver lets the call go ahead.
    public mutating func approve(_ id: String, by approver: PeerCredentials,
                                 now: Instant) throws(ApprovalRefusal) -> ApprovalTransition {
        var entry = try decidable(id, by: approver, now: now)
        entry.state = .approved(by: approver)
        entries[id] = entry
        return transition(entry, from: .pending, by: approver, reason: "approved by \(approver)", now: now)
    }

    /// An approver refuses the call, with a reason the app will see.
    public mutating func deny(_ id: String, by approver: PeerCredentials, reason: String,
                              now: Instant) throws(ApprovalRefusal) -> ApprovalTransition {
        var entry = try decidable(id, by: approver, now: now)
        let why = reason.isEmpty ? "denied by \(approver)" : "denied by \(approver): \(reason)"
        entry.state = .denied(by: approver, reason: reason)
        entries[id] = entry
        return transition(entry, from: .pending, by: approver, reason: why, now: now)
    }

    /// The waiting call went away (cancelled, connection closed): nobody needs to decide it any more.
    public mutating func withdraw(_ id: String, now: Instant) -> ApprovalTransition? {
        guard var entry = entries[id], entry.state == .pending else { return nil }
        entry.state = .withdrawn
        entries[id] = entry
        return transition(entry, from: .pending, by: nil, reason: "the call was withdrawn before a decision",
                          now: now)
    }

    /// Denies every pending call whose timeout has passed.
    public mutating func expire(now: Instant) -> [ApprovalTransition] {
        var out: [ApprovalTransition] = []
        for (id, var entry) in entries where entry.state == .pending && entry.deadline <= now {
            entry.state = .expired
            entries[id] = entry
            out.append(transition(entry, from: .pending, by: nil,
                                  reason: "no decision within \(entry.deadline - entry.requestedAt)", now: now))
        }
        return out.sorted { $0.id < $1.id }
    }

    /// The earliest deadline among pending calls: when the daemon should next call `expire(now:)`.
    public var nextDeadline: Instant? {
        entries.values.lazy.filter { $0.state == .pending }.map(\.deadline).min()
    }

    /// Pending calls, oldest first (`breakwater approvals`).
    public var pending: [ApprovalRequest] {
        entries.values.filter { $0.state == .pending }.sorted {
            ($0.requestedAt, $0.id) < ($1.requestedAt, $1.id)
        }
    }

    public subscript(id: String) -> ApprovalRequest? { entries[id] }

    /// Drops a decided entry once its outcome reached the waiting call. Pending entries stay.
    public mutating func forget(_ id: String) {
        if let entry = entries[id], entry.state != .pending { entries[id] = nil }
    }

    /// The pending calls in a form that survives a restart: deadlines become wall-clock times.
    public func snapshot(now: Instant, wallNow: Double) -> [ApprovalSnapshot] {
        pending.map { e in
            ApprovalSnapshot(id: e.id, subject: e.subject, requester: e.requester, approvers: e.approvers,
                             requestedAt: e.requestedAtWall, deadline: wallNow + (e.deadline - now).seconds,
                             timeoutSeconds: (e.deadline - e.requestedAt).seconds)
        }
    }

    /// Restores pending calls saved by `snapshot`; those whose deadline passed while the daemon was down expire
    /// at once (the returned transitions).
    public mutating func restore(_ saved: [ApprovalSnapshot], now: Instant, wallNow: Double) -> [ApprovalTransition] {
        for s in saved where entries[s.id] == nil {
            let deadline = now + .seconds(s.deadline - wallNow)
            entries[s.id] = ApprovalRequest(id: s.id, subject: s.subject, requester: s.requester,
                                            approvers: s.approvers, requestedAt: deadline - .seconds(s.timeoutSeconds),
                                            requestedAtWall: s.requestedAt, deadline: deadline, state: .pending)
        }
        return expire(now: now)
    }

    private func decidable(_ id: String, by approver: PeerCredentials,
                           now: Instant) throws(ApprovalRefusal) -> ApprovalRequest {
        guard let entry = entries[id] else {
            throw ApprovalRefusal(code: .unknownRequest, id: id, reason: "no approval request \"\(id)\"")
        }
        guard entry.state == .pending else {
            throw ApprovalRefusal(code: .alreadyDecided, id: id,
                                  reason: "approval request \"\(id)\" is already \(entry.state.name)")
        }
        guard entry.deadline > now else {
            throw ApprovalRefusal(code: .expired, id: id, reason: "approval request \"\(id)\" timed out")
        }
        guard entry.approvers.contains(approver) else {
            throw ApprovalRefusal(code: .notAnApprover, id: id,
                                  reason: "\(approver) is not an approver for \(entry.subject.rule)")
        }
        guard allowSelfApproval || approver.uid != entry.requester.uid else {
            throw ApprovalRefusal(code: .selfApproval, id: id,
                                  reason: "uid \(approver.uid) made the call and may not decide it "
                                      + "(allow_self_approval is off)")
        }
        return entry
    }

    private func transition(_ e: ApprovalRequest, from: ApprovalState.Name?, by: PeerCredentials?, reason: String,
                            now: Instant) -> ApprovalTransition {
        ApprovalTransition(id: e.id, agent: e.subject.agent, action: e.subject.action, tenant: e.subject.tenant,
                           rule: e.subject.rule, from: from,
                           to: e.state.name, by: by, reason: reason, at: now)
    }
}

/// What an approval is for: the agent, the call it makes and the control that asked. A call sent again after a
/// restart re-attaches to an approval only when all of it is the same, so an approval given for one action,
/// tenant, route or model cannot be spent on another.
public struct ApprovalSubject: Sendable, Hashable, Codable {
    public var agent: String
    public var action: String?
    public var tenant: String?
    /// Nil for an action (AUTHORIZE).
    public var route: String?
    public var model: String?
    /// The control that asked for approval.
    public var rule: String
    /// An action's arguments: the SHA-256 of their canonical JSON. The approval is valid for these arguments
    /// only.
    public var argumentHash: String?
    /// The argument fields the policy shows approvers (`show_arguments`), as canonical JSON values; the rest of
    /// the arguments never leave the daemon.
    public var shownArguments: [String: String]?

    public init(agent: String, action: String?, tenant: String?, route: String?, model: String?, rule: String,
                argumentHash: String? = nil, shownArguments: [String: String]? = nil) {
        self.agent = agent
        self.action = action
        self.tenant = tenant
        self.route = route
        self.model = model
        self.rule = rule
        self.argumentHash = argumentHash
        self.shownArguments = shownArguments
    }

    /// The subject of `request` under the control `rule`.
    public init(request: AccessRequest, rule: String, shownArguments: [String: String]? = nil) {
        self.init(agent: request.principal.agent, action: request.action, tenant: request.tenant,
                  route: request.route, model: request.model, rule: rule, argumentHash: request.argumentHash,
                  shownArguments: shownArguments)
    }
}

/// One call waiting for (or past) a decision.
public struct ApprovalRequest: Sendable, Hashable {
    public var id: String
    public var subject: ApprovalSubject
    /// The process that made the call.
    public var requester: PeerCredentials
    public var approvers: PeerSet
    public var requestedAt: Instant
    /// Unix seconds, for display.
    public var requestedAtWall: Double
    public var deadline: Instant
    public var state: ApprovalState
}

/// Where an approval request stands. Only `pending` can change; each change is an `ApprovalTransition`.
public enum ApprovalState: Sendable, Hashable {
    case pending
    case approved(by: PeerCredentials)
    case denied(by: PeerCredentials, reason: String)
    case expired
    case withdrawn

    /// The state without its details, for the audit trail's fields.
    public enum Name: String, Sendable, Hashable, CustomStringConvertible {
        case pending, approved, denied, expired, withdrawn
        public var description: String { rawValue }
    }

    public var name: Name {
        switch self {
        case .pending: .pending
        case .approved: .approved
        case .denied: .denied
        case .expired: .expired
        case .withdrawn: .withdrawn
        }
    }
}

/// One state change of an approval request: each becomes an audit event (requested, granted, denied, expired).
public struct ApprovalTransition: Sendable, Hashable, CustomStringConvertible {
    public var id: String
    public var agent: String
    public var action: String?
    public var tenant: String?
    public var rule: String
    /// Nil for the request itself.
    public var from: ApprovalState.Name?
    public var to: ApprovalState.Name
    /// Who caused it: the requester, the approver, or nil for a timeout or withdrawal.
    public var by: PeerCredentials?
    public var reason: String
    public var at: Instant

    public var description: String {
        "approval \(id) \(from.map { "\($0) → " } ?? "")\(to): \(reason)"
    }
}

/// Why an approve or deny was refused.
public struct ApprovalRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let unknownRequest = Code(rawValue: "unknown_request")
        public static let notAnApprover = Code(rawValue: "not_an_approver")
        public static let selfApproval = Code(rawValue: "self_approval")
        public static let alreadyDecided = Code(rawValue: "already_decided")
        public static let expired = Code(rawValue: "expired")
        public static let duplicateID = Code(rawValue: "duplicate_id")
        public var description: String { rawValue }
    }

    public var code: Code
    public var id: String
    public var reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// A pending approval as the state store keeps it across a restart (times in Unix seconds). Stored as JSON with
/// the subject's fields at the top level, as before `ApprovalSubject` existed, so rows written by an older daemon
/// still load.
public struct ApprovalSnapshot: Sendable, Hashable, Codable {
    public var id: String
    public var subject: ApprovalSubject
    public var requester: PeerCredentials
    public var approvers: PeerSet
    public var requestedAt: Double
    public var deadline: Double
    public var timeoutSeconds: Double

    public init(id: String, subject: ApprovalSubject, requester: PeerCredentials, approvers: PeerSet,
                requestedAt: Double, deadline: Double, timeoutSeconds: Double) {
        self.id = id
        self.subject = subject
        self.requester = requester
        self.approvers = approvers
        self.requestedAt = requestedAt
        self.deadline = deadline
        self.timeoutSeconds = timeoutSeconds
    }

    enum CodingKeys: String, CodingKey {
        case id, requester, approvers, requestedAt, deadline, timeoutSeconds
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(id: try c.decode(String.self, forKey: .id), subject: try ApprovalSubject(from: decoder),
                  requester: try c.decode(PeerCredentials.self, forKey: .requester),
                  approvers: try c.decode(PeerSet.self, forKey: .approvers),
                  requestedAt: try c.decode(Double.self, forKey: .requestedAt),
                  deadline: try c.decode(Double.self, forKey: .deadline),
                  timeoutSeconds: try c.decode(Double.self, forKey: .timeoutSeconds))
    }

    public func encode(to encoder: any Encoder) throws {
        try subject.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(requester, forKey: .requester)
        try c.encode(approvers, forKey: .approvers)
        try c.encode(requestedAt, forKey: .requestedAt)
        try c.encode(deadline, forKey: .deadline)
        try c.encode(timeoutSeconds, forKey: .timeoutSeconds)
    }
}
