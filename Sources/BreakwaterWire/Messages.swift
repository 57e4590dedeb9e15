/// HELLO, both ways. The client's opens the connection; the daemon's answers with the chosen version and limits.
public struct Hello: Sendable, Hashable {
    /// Every HELLO payload starts with these bytes ("BKWR"), so a stray client of another protocol is caught at once.
    public static let magic: [UInt8] = [0x42, 0x4B, 0x57, 0x52]

    enum Tag: UInt16 {
        case minVersion = 1, maxVersion = 2, credential = 3, clientName = 4
        case version = 5, maxFramePayload = 6, maxBody = 7, maxConcurrentCalls = 8, serverName = 9
        case startedNotices = 10, streamWindow = 11
    }

    // Client → daemon.
    public var minVersion: UInt16?
    public var maxVersion: UInt16?
    /// The agent's token. Secret: never logged, never echoed.
    public var credential: [UInt8]?
    public var clientName: String?
    // Daemon → client.
    public var version: UInt16?
    public var limits: Limits?
    public var serverName: String?
    /// Client: "send STARTED before each call's first upstream request". Daemon: "I will". With it a client knows,
    /// when the daemon dies, which calls never reached a provider and may be sent again.
    public var startedNotices = false
    /// Flow control (PROTOCOL.md, "Flow control"). Client: "credit-count your DATA to me; each call of mine starts
    /// with this many bytes and I send WINDOW_UPDATE as I consume". Daemon: "I will", echoing the value it uses.
    /// Absent: no per-call credit (the daemon still bounds what it buffers per connection).
    public var streamWindow: UInt32?

    public init() {}

    public static func client(credential: [UInt8]? = nil, clientName: String? = nil,
                              versions: ClosedRange<UInt16> = ProtocolVersion.supported,
                              startedNotices: Bool = false, streamWindow: UInt32? = nil) -> Hello {
        var h = Hello()
        h.startedNotices = startedNotices
        h.streamWindow = streamWindow
        h.minVersion = versions.lowerBound
        h.maxVersion = versions.upperBound
        h.credential = credential
        h.clientName = clientName
        return h
    }

    public static func server(version: UInt16, limits: Limits, serverName: String,
                              startedNotices: Bool = false, streamWindow: UInt32? = nil) -> Hello {
        var h = Hello()
        h.startedNotices = startedNotices
        h.streamWindow = streamWindow
        h.version = version
        h.limits = limits
        h.serverName = serverName
        return h
    }

    public func frame() -> Frame {
        var w = FieldWriter()
        if let minVersion { w.uint16(Tag.minVersion.rawValue, minVersion) }
        if let maxVersion { w.uint16(Tag.maxVersion.rawValue, maxVersion) }
        if let credential { w.bytes(Tag.credential.rawValue, credential) }
        w.string(Tag.clientName.rawValue, clientName)
        if let version { w.uint16(Tag.version.rawValue, version) }
        if let limits {
            w.uint32(Tag.maxFramePayload.rawValue, limits.maxFramePayload)
            w.uint32(Tag.maxBody.rawValue, limits.maxBody)
            w.uint32(Tag.maxConcurrentCalls.rawValue, limits.maxConcurrentCalls)
        }
        w.string(Tag.serverName.rawValue, serverName)
        if startedNotices { w.uint8(Tag.startedNotices.rawValue, 1) }
        w.uint32(Tag.streamWindow.rawValue, streamWindow)
        return Frame(streamID: 0, type: .hello, payload: Hello.magic + w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        guard frame.type == .hello else { throw WireError(.helloRequired, "expected HELLO, got \(frame.type)") }
        guard frame.payload.starts(with: Hello.magic) else {
            throw WireError(.protocolError, "HELLO payload does not start with the magic bytes 42 4B 57 52")
        }
        let r = try FieldReader(frame.payload, from: Hello.magic.count, what: .hello)
        minVersion = try r.uint16(Tag.minVersion.rawValue, .hello)
        maxVersion = try r.uint16(Tag.maxVersion.rawValue, .hello)
        credential = r.bytes(Tag.credential.rawValue)
        clientName = try r.string(Tag.clientName.rawValue, .hello)
        version = try r.uint16(Tag.version.rawValue, .hello)
        // Each is width-checked wherever it appears, even when the others are absent.
        let frameMax = try r.uint32(Tag.maxFramePayload.rawValue, .hello)
        let body = try r.uint32(Tag.maxBody.rawValue, .hello)
        let calls = try r.uint32(Tag.maxConcurrentCalls.rawValue, .hello)
        if let frameMax, let body, let calls {
            limits = Limits(maxFramePayload: frameMax, maxBody: body, maxConcurrentCalls: calls)
        }
        serverName = try r.string(Tag.serverName.rawValue, .hello)
        startedNotices = try r.bool(Tag.startedNotices.rawValue, .hello) ?? false
        streamWindow = try r.uint32(Tag.streamWindow.rawValue, .hello)
        if let streamWindow, streamWindow == 0 || streamWindow > WindowUpdate.maxCredit {
            throw WireError(.protocolError, "stream_window must be 1 to \(WindowUpdate.maxCredit), not \(streamWindow)")
        }
    }

    /// The daemon's choice: the highest version both sides speak, or nil when the ranges do not meet.
    public func negotiate(supported: ClosedRange<UInt16> = ProtocolVersion.supported) -> UInt16? {
        let low = max(minVersion ?? 1, supported.lowerBound)
        let high = min(maxVersion ?? minVersion ?? 1, supported.upperBound)
        return low <= high ? high : nil
    }
}

/// WINDOW_UPDATE: the client consumed `increment` more bytes of a call's DATA and grants the daemon that much more
/// credit on the stream. Only on connections whose HELLOs agreed on `stream_window`.
public struct WindowUpdate: Sendable, Hashable {
    /// The most credit a stream may hold (HTTP/2's 2^31 - 1): a window or a sum of grants past it is an error.
    public static let maxCredit: UInt32 = 0x7FFF_FFFF

    public var increment: UInt32

    public init(increment: UInt32) {
        self.increment = increment
    }

    public func frame(streamID: StreamID) -> Frame {
        var payload: [UInt8] = []
        appendUInt32(increment, to: &payload)
        return Frame(streamID: streamID, type: .windowUpdate, payload: payload)
    }

    /// The payload's length (4) is checked with the header; an increment of 0 or past `maxCredit` is refused here.
    public init(frame: Frame) throws(WireError) {
        guard frame.type == .windowUpdate, frame.payload.count == 4 else {
            throw WireError(.protocolError, "WINDOW_UPDATE payload must be 4 bytes")
        }
        increment = readUInt32(frame.payload, at: 0)
        if increment == 0 || increment > Self.maxCredit {
            throw WireError(.protocolError, "WINDOW_UPDATE increment must be 1 to \(Self.maxCredit), not \(increment)")
        }
    }
}

/// REQUEST opens a call on a new odd stream id. The body (the canonical chat-completions JSON) follows in DATA
/// frames, the last one flagged END_STREAM; a REQUEST flagged END_STREAM has no body.
public struct CallRequest: Sendable, Hashable {
    enum Tag: UInt16 {
        case route = 1, stream = 2, timeoutMs = 3, requestID = 4, action = 5, tenant = 6, stepUpToken = 7
    }

    /// The route name; the daemon maps it to an ordered chain of provider targets.
    public var route: String
    /// Ask for a streamed answer: each event arrives in its own DATA frame as the provider sends it.
    public var stream: Bool
    /// The call's whole deadline, from the moment the daemon has the complete request.
    public var timeoutMs: UInt32?
    /// The caller's own correlation id (at most 128 bytes); the daemon makes one when absent.
    public var requestID: String?
    /// The action the call performs (e.g. `invoice.create`); checked by policy in later versions.
    public var action: String?
    /// The tenant the call acts for; checked by policy in later versions.
    public var tenant: String?
    /// The short-lived second credential for actions that need step-up authentication. Secret.
    public var stepUpToken: [UInt8]?

    public init(route: String, stream: Bool = false, timeoutMs: UInt32? = nil, requestID: String? = nil,
                action: String? = nil, tenant: String? = nil, stepUpToken: [UInt8]? = nil) {
        self.route = route
        self.stream = stream
        self.timeoutMs = timeoutMs
        self.requestID = requestID
        self.action = action
        self.tenant = tenant
        self.stepUpToken = stepUpToken
    }

    public func frame(streamID: StreamID, endStream: Bool = false) -> Frame {
        var w = FieldWriter()
        w.string(Tag.route.rawValue, route)
        w.uint8(Tag.stream.rawValue, stream ? 1 : 0)
        w.uint32(Tag.timeoutMs.rawValue, timeoutMs)
        w.string(Tag.requestID.rawValue, requestID)
        w.string(Tag.action.rawValue, action)
        w.string(Tag.tenant.rawValue, tenant)
        if let stepUpToken { w.bytes(Tag.stepUpToken.rawValue, stepUpToken) }
        return Frame(streamID: streamID, type: .request, flags: endStream ? .endStream : [], payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .request)
        // A well-formed field list with a missing or unusable value fails the call (BAD_REQUEST), not the connection.
        guard let route = try r.string(Tag.route.rawValue, .request), !route.isEmpty else {
            throw WireError(.badRequest, "REQUEST has no route")
        }
        self.route = route
        stream = try r.bool(Tag.stream.rawValue, .request) ?? false
        timeoutMs = try r.uint32(Tag.timeoutMs.rawValue, .request)
        requestID = try r.string(Tag.requestID.rawValue, .request)
        if let id = requestID, id.utf8.count > 128 {
            throw WireError(.badRequest, "REQUEST request id is longer than 128 bytes")
        }
        action = try r.string(Tag.action.rawValue, .request)
        tenant = try r.string(Tag.tenant.rawValue, .request)
        stepUpToken = r.bytes(Tag.stepUpToken.rawValue)
    }
}

/// NOTICE: the call is waiting for something outside it, and goes on afterwards. v1 has one kind,
/// `pending_approval`: a human must approve the call (`breakwater approve ID`) before it runs.
public struct CallNotice: Sendable, Hashable {
    enum Tag: UInt16 { case kind = 1, approvalID = 2, message = 3, timeoutMs = 4 }

    public var kind: String
    public var approvalID: String?
    public var message: String
    /// How long the wait may last before the call fails.
    public var timeoutMs: UInt32?

    public init(kind: String, approvalID: String? = nil, message: String, timeoutMs: UInt32? = nil) {
        self.kind = kind
        self.approvalID = approvalID
        self.message = message
        self.timeoutMs = timeoutMs
    }

    public static let pendingApproval = "pending_approval"

    public func frame(streamID: StreamID) -> Frame {
        var w = FieldWriter()
        w.string(Tag.kind.rawValue, kind)
        w.string(Tag.approvalID.rawValue, approvalID)
        w.string(Tag.message.rawValue, message)
        w.uint32(Tag.timeoutMs.rawValue, timeoutMs)
        return Frame(streamID: streamID, type: .notice, payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .notice)
        kind = try r.string(Tag.kind.rawValue, .notice) ?? ""
        approvalID = try r.string(Tag.approvalID.rawValue, .notice)
        message = try r.string(Tag.message.rawValue, .notice) ?? ""
        timeoutMs = try r.uint32(Tag.timeoutMs.rawValue, .notice)
    }
}

/// ADMIN opens an admin command on a new odd stream id, like REQUEST; its JSON arguments (possibly `{}`) follow in
/// DATA frames. The answer is RESPONSE + DATA (a JSON document) + TRAILERS, or ERROR (`FORBIDDEN` for a caller
/// the config does not name as an admin or approver).
public struct AdminRequest: Sendable, Hashable {
    enum Tag: UInt16 { case command = 1 }

    /// `status`, `breakers`, `approvals`, `approve`, `deny`, `policy-check`, ...
    public var command: String

    public init(command: String) {
        self.command = command
    }

    public func frame(streamID: StreamID, endStream: Bool = false) -> Frame {
        var w = FieldWriter()
        w.string(Tag.command.rawValue, command)
        return Frame(streamID: streamID, type: .admin, flags: endStream ? .endStream : [], payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .admin)
        guard let command = try r.string(Tag.command.rawValue, .admin), !command.isEmpty else {
            throw WireError(.badRequest, "ADMIN has no command")
        }
        self.command = command
    }
}

/// AUTHORIZE asks, before the app executes an action, whether its agent may: on a new odd stream id, like REQUEST;
/// the action's arguments, a JSON object (possibly `{}`), follow in DATA frames, the last flagged END_STREAM (or
/// AUTHORIZE itself is). The daemon answers through the same gate as calls — RESPONSE + one DATA frame with the
/// decision (`ActionDecision`, a field list) + TRAILERS, or ERROR (`FORBIDDEN`,
/// `STEP_UP_REQUIRED`, `RATE_LIMITED`, `CONCURRENCY_LIMIT`, `APPROVAL_DENIED`, `APPROVAL_EXPIRED`, ...), with
/// NOTICE `pending_approval` first when a person must decide.
public struct AuthorizeRequest: Sendable, Hashable {
    enum Tag: UInt16 { case action = 1, tenant = 2, requestID = 3, stepUpToken = 4, timeoutMs = 5 }

    /// The action the app is about to perform, e.g. `refund.issue`.
    public var action: String
    public var tenant: String?
    /// The caller's own correlation id (at most 128 bytes); the daemon makes one when absent.
    public var requestID: String?
    /// The short-lived second credential for actions that need step-up authentication. Secret.
    public var stepUpToken: [UInt8]?
    /// How long the app waits at most (an approval included); `limits.default_call_timeout` when absent.
    public var timeoutMs: UInt32?

    public init(action: String, tenant: String? = nil, requestID: String? = nil, stepUpToken: [UInt8]? = nil,
                timeoutMs: UInt32? = nil) {
        self.action = action
        self.tenant = tenant
        self.requestID = requestID
        self.stepUpToken = stepUpToken
        self.timeoutMs = timeoutMs
    }

    public func frame(streamID: StreamID, endStream: Bool = false) -> Frame {
        var w = FieldWriter()
        w.string(Tag.action.rawValue, action)
        w.string(Tag.tenant.rawValue, tenant)
        w.string(Tag.requestID.rawValue, requestID)
        if let stepUpToken { w.bytes(Tag.stepUpToken.rawValue, stepUpToken) }
        w.uint32(Tag.timeoutMs.rawValue, timeoutMs)
        return Frame(streamID: streamID, type: .authorize, flags: endStream ? .endStream : [], payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .authorize)
        guard let action = try r.string(Tag.action.rawValue, .authorize), !action.isEmpty else {
            throw WireError(.badRequest, "AUTHORIZE has no action")
        }
        self.action = action
        tenant = try r.string(Tag.tenant.rawValue, .authorize)
        requestID = try r.string(Tag.requestID.rawValue, .authorize)
        if let id = requestID, id.utf8.count > 128 {
            throw WireError(.badRequest, "AUTHORIZE request id is longer than 128 bytes")
        }
        stepUpToken = r.bytes(Tag.stepUpToken.rawValue)
        timeoutMs = try r.uint32(Tag.timeoutMs.rawValue, .authorize)
    }
}

/// The DATA of an allowed AUTHORIZE (between RESPONSE and TRAILERS): a field list, so a shim decodes it with the
/// wire codec it already has.
public struct ActionDecision: Sendable, Hashable {
    enum Tag: UInt16 { case decisionID = 1, rule = 2, argumentHash = 3, approvalID = 4 }

    /// The daemon's id for this decision (also in the audit trail), for the app's own logs.
    public var decisionID: String
    /// The rule that allowed it (`no_policy` when the daemon runs without one).
    public var rule: String
    /// SHA-256 (hex) of the arguments' canonical JSON: what an approval was bound to.
    public var argumentHash: String
    /// The approval that allowed it, when a person did (or an earlier approval was reused).
    public var approvalID: String?

    public init(decisionID: String, rule: String, argumentHash: String, approvalID: String? = nil) {
        self.decisionID = decisionID
        self.rule = rule
        self.argumentHash = argumentHash
        self.approvalID = approvalID
    }

    public var payload: [UInt8] {
        var w = FieldWriter()
        w.string(Tag.decisionID.rawValue, decisionID)
        w.string(Tag.rule.rawValue, rule)
        w.string(Tag.argumentHash.rawValue, argumentHash)
        w.string(Tag.approvalID.rawValue, approvalID)
        return w.bytes
    }

    public init(payload: [UInt8]) throws(WireError) {
        let r = try FieldReader(payload, what: .data)
        guard let id = try r.string(Tag.decisionID.rawValue, .data), let rule = try r.string(Tag.rule.rawValue, .data),
              let hash = try r.string(Tag.argumentHash.rawValue, .data) else {
            throw WireError(.protocolError, "an AUTHORIZE decision lacks decision_id, rule or argument_hash")
        }
        decisionID = id
        self.rule = rule
        argumentHash = hash
        approvalID = try r.string(Tag.approvalID.rawValue, .data)
    }
}

/// RESPONSE opens the answer: who answered and how. DATA frames with the body follow, then TRAILERS.
public struct CallResponse: Sendable, Hashable {
    enum Tag: UInt16 { case status = 1, provider = 2, model = 3, attempts = 4, requestID = 5 }

    /// The provider's HTTP status (200 on success).
    public var status: UInt16
    /// The configured provider name that answered.
    public var provider: String
    /// The model that answered.
    public var model: String
    /// How many upstream attempts the call took, this one included.
    public var attempts: UInt16
    public var requestID: String

    public init(status: UInt16, provider: String, model: String, attempts: UInt16, requestID: String) {
        self.status = status
        self.provider = provider
        self.model = model
        self.attempts = attempts
        self.requestID = requestID
    }

    public func frame(streamID: StreamID) -> Frame {
        var w = FieldWriter()
        w.uint16(Tag.status.rawValue, status)
        w.string(Tag.provider.rawValue, provider)
        w.string(Tag.model.rawValue, model)
        w.uint16(Tag.attempts.rawValue, attempts)
        w.string(Tag.requestID.rawValue, requestID)
        return Frame(streamID: streamID, type: .response, payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .response)
        status = try r.uint16(Tag.status.rawValue, .response) ?? 0
        provider = try r.string(Tag.provider.rawValue, .response) ?? ""
        model = try r.string(Tag.model.rawValue, .response) ?? ""
        attempts = try r.uint16(Tag.attempts.rawValue, .response) ?? 1
        requestID = try r.string(Tag.requestID.rawValue, .response) ?? ""
    }
}

/// TRAILERS end every answer that began with RESPONSE: the outcome and the token usage.
public struct CallTrailers: Sendable, Hashable {
    enum Tag: UInt16 {
        case outcome = 1, errorCode = 2, message = 3, promptTokens = 4, completionTokens = 5, totalTokens = 6
    }

    /// Nil on success. On failure (e.g. a stream cut after bytes reached the app) the code says why.
    public var error: ErrorCode?
    public var message: String?
    public var promptTokens: UInt32?
    public var completionTokens: UInt32?
    public var totalTokens: UInt32?

    public init(error: ErrorCode? = nil, message: String? = nil, promptTokens: UInt32? = nil,
                completionTokens: UInt32? = nil, totalTokens: UInt32? = nil) {
        self.error = error
        self.message = message
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
    }

    public var succeeded: Bool { error == nil }

    public func frame(streamID: StreamID) -> Frame {
        var w = FieldWriter()
        w.uint8(Tag.outcome.rawValue, error == nil ? 0 : 1)
        if let error { w.uint16(Tag.errorCode.rawValue, error.rawValue) }
        w.string(Tag.message.rawValue, message)
        w.uint32(Tag.promptTokens.rawValue, promptTokens)
        w.uint32(Tag.completionTokens.rawValue, completionTokens)
        w.uint32(Tag.totalTokens.rawValue, totalTokens)
        return Frame(streamID: streamID, type: .trailers, flags: .endStream, payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .trailers)
        let outcome = try r.uint8(Tag.outcome.rawValue, .trailers) ?? 0
        if outcome != 0 {
            let code = try r.uint16(Tag.errorCode.rawValue, .trailers)
            error = ErrorCode(rawValue: code ?? ErrorCode.internalError.rawValue)
        }
        message = try r.string(Tag.message.rawValue, .trailers)
        promptTokens = try r.uint32(Tag.promptTokens.rawValue, .trailers)
        completionTokens = try r.uint32(Tag.completionTokens.rawValue, .trailers)
        totalTokens = try r.uint32(Tag.totalTokens.rawValue, .trailers)
    }
}

/// ERROR: on stream 0 a connection error (the connection closes after it); on a call's stream, that call failed
/// before its RESPONSE (or was cancelled) and nothing more comes for it.
/// One step of a failed call's walk along its route (PROTOCOL.md, ERROR's `attempts`): a target tried, or skipped,
/// and what came of it. Readable values only: never prompts, completions or keys.
public struct AttemptReport: Sendable, Hashable {
    enum Tag: UInt16 {
        case provider = 1, model = 2, outcome = 3, failure = 4, upstreamStatus = 5, waitMs = 6, then = 7
        case retryBudgetRefused = 8, message = 9
    }

    /// The configured provider and the model asked of it.
    public var provider: String
    public var model: String
    /// What happened: `error_status`, `timed_out`, `unreachable`, `malformed`, `stream_error`, `configuration`
    /// (the request went out, or was to); `breaker_open`, `keys_busy`, `policy`, `budget`, `deadline`,
    /// `no_credential`, `not_translatable` (the target was skipped). Others may come: treat unknown ones as opaque.
    public var outcome: String
    /// For a failure: its class (`transient`, `rate_limited`, `quota_exhausted`, `auth`, `not_found`,
    /// `bad_request`, `configuration`), which decides retries and fallback.
    public var failure: String?
    public var upstreamStatus: UInt16?
    /// The wait chosen after this step: the backoff or Retry-After before a retry, or the wait for a free key that
    /// was too long.
    public var waitMs: UInt32?
    /// What the daemon did next: `retried`, `moved_on` (to the next target) or `gave_up`.
    public var then: String?
    /// The retry budget refused the retry this failure would have had.
    public var retryBudgetRefused: Bool
    /// Readable detail.
    public var message: String?

    public init(provider: String, model: String, outcome: String, failure: String? = nil,
                upstreamStatus: UInt16? = nil, waitMs: UInt32? = nil, then: String? = nil,
                retryBudgetRefused: Bool = false, message: String? = nil) {
        self.provider = provider
        self.model = model
        self.outcome = outcome
        self.failure = failure
        self.upstreamStatus = upstreamStatus
        self.waitMs = waitMs
        self.then = then
        self.retryBudgetRefused = retryBudgetRefused
        self.message = message
    }

    func fields() -> [UInt8] {
        var w = FieldWriter()
        w.string(Tag.provider.rawValue, provider)
        w.string(Tag.model.rawValue, model)
        w.string(Tag.outcome.rawValue, outcome)
        w.string(Tag.failure.rawValue, failure)
        if let upstreamStatus { w.uint16(Tag.upstreamStatus.rawValue, upstreamStatus) }
        w.uint32(Tag.waitMs.rawValue, waitMs)
        w.string(Tag.then.rawValue, then)
        if retryBudgetRefused { w.uint8(Tag.retryBudgetRefused.rawValue, 1) }
        w.string(Tag.message.rawValue, message)
        return w.bytes
    }

    init(fields: ArraySlice<UInt8>) throws(WireError) {
        let r = try FieldReader(Array(fields), what: .error)
        provider = try r.string(Tag.provider.rawValue, .error) ?? ""
        model = try r.string(Tag.model.rawValue, .error) ?? ""
        outcome = try r.string(Tag.outcome.rawValue, .error) ?? ""
        failure = try r.string(Tag.failure.rawValue, .error)
        upstreamStatus = try r.uint16(Tag.upstreamStatus.rawValue, .error)
        waitMs = try r.uint32(Tag.waitMs.rawValue, .error)
        then = try r.string(Tag.then.rawValue, .error)
        retryBudgetRefused = try r.bool(Tag.retryBudgetRefused.rawValue, .error) ?? false
        message = try r.string(Tag.message.rawValue, .error)
    }
}

public struct ErrorMessage: Sendable, Hashable, Error {
    enum Tag: UInt16 { case code = 1, message = 2, upstreamStatus = 3, provider = 4, retryAfterMs = 5, attempts = 6 }

    public var code: ErrorCode
    /// Readable, and safe: never contains prompts, completions, tokens or keys.
    public var message: String
    /// For UPSTREAM_ERROR: the provider's HTTP status.
    public var upstreamStatus: UInt16?
    /// For upstream errors: the configured provider name.
    public var provider: String?
    /// A hint for when trying again makes sense.
    public var retryAfterMs: UInt32?
    /// For a call that failed after walking its route: each target tried or skipped, in order.
    public var attempts: [AttemptReport]

    public init(code: ErrorCode, message: String, upstreamStatus: UInt16? = nil, provider: String? = nil,
                retryAfterMs: UInt32? = nil, attempts: [AttemptReport] = []) {
        self.attempts = attempts
        self.code = code
        self.message = message
        self.upstreamStatus = upstreamStatus
        self.provider = provider
        self.retryAfterMs = retryAfterMs
    }

    public init(_ error: WireError) {
        self.init(code: error.code, message: error.message)
    }

    public func frame(streamID: StreamID) -> Frame {
        var w = FieldWriter()
        w.uint16(Tag.code.rawValue, code.rawValue)
        w.string(Tag.message.rawValue, message)
        if let upstreamStatus { w.uint16(Tag.upstreamStatus.rawValue, upstreamStatus) }
        w.string(Tag.provider.rawValue, provider)
        w.uint32(Tag.retryAfterMs.rawValue, retryAfterMs)
        if !attempts.isEmpty {
            // A nested field list: one field of tag 1 per attempt, in order (the only list where a tag repeats).
            var list = FieldWriter()
            for a in attempts { list.bytes(1, a.fields()) }
            w.bytes(Tag.attempts.rawValue, list.bytes)
        }
        return Frame(streamID: streamID, type: .error, payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .error)
        guard let code = try r.uint16(Tag.code.rawValue, .error) else {
            throw WireError(.protocolError, "ERROR has no code")
        }
        self.code = ErrorCode(rawValue: code)
        message = try r.string(Tag.message.rawValue, .error) ?? ""
        upstreamStatus = try r.uint16(Tag.upstreamStatus.rawValue, .error)
        provider = try r.string(Tag.provider.rawValue, .error)
        retryAfterMs = try r.uint32(Tag.retryAfterMs.rawValue, .error)
        if let nested = r.bytes(Tag.attempts.rawValue) {
            let list = try FieldReader(nested, what: .error)
            var found: [AttemptReport] = []
            for entry in list.all(1) { found.append(try AttemptReport(fields: entry)) }
            attempts = found
        } else {
            attempts = []
        }
    }
}

/// GOAWAY: the daemon is draining. Calls up to `lastStreamID` finish; later ones were never started and may be
/// sent again on a new connection.
public struct GoAway: Sendable, Hashable {
    enum Tag: UInt16 { case lastStreamID = 1, code = 2, message = 3 }

    public var lastStreamID: StreamID
    public var code: ErrorCode
    public var message: String

    public init(lastStreamID: StreamID, code: ErrorCode = .shuttingDown, message: String = "daemon is shutting down") {
        self.lastStreamID = lastStreamID
        self.code = code
        self.message = message
    }

    public func frame() -> Frame {
        var w = FieldWriter()
        w.uint32(Tag.lastStreamID.rawValue, lastStreamID)
        w.uint16(Tag.code.rawValue, code.rawValue)
        w.string(Tag.message.rawValue, message)
        return Frame(streamID: 0, type: .goAway, payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        let r = try FieldReader(frame.payload, what: .goAway)
        lastStreamID = try r.uint32(Tag.lastStreamID.rawValue, .goAway) ?? 0
        code = ErrorCode(rawValue: try r.uint16(Tag.code.rawValue, .goAway) ?? ErrorCode.shuttingDown.rawValue)
        message = try r.string(Tag.message.rawValue, .goAway) ?? ""
    }
}

extension Frame {
    public static func cancel(streamID: StreamID) -> Frame { Frame(streamID: streamID, type: .cancel) }

    public static func data(streamID: StreamID, _ bytes: [UInt8], endStream: Bool = false) -> Frame {
        Frame(streamID: streamID, type: .data, flags: endStream ? .endStream : [], payload: bytes)
    }

    /// PING and PONG carry exactly 8 opaque bytes; PONG echoes the PING's.
    public static func ping(_ opaque: UInt64) -> Frame {
        var p: [UInt8] = []
        appendUInt32(UInt32(truncatingIfNeeded: opaque >> 32), to: &p)
        appendUInt32(UInt32(truncatingIfNeeded: opaque), to: &p)
        return Frame(streamID: 0, type: .ping, payload: p)
    }

    public func pong() -> Frame { Frame(streamID: 0, type: .pong, payload: payload) }
}
