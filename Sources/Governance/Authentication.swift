import Resilience

/// The agent a connection acts as, established once at HELLO. Only `authenticate` makes one; it remembers which
/// credential was used (by name and digest) so every later decision can check that credential is still valid.
public struct Principal: Sendable, Hashable, CustomStringConvertible {
    public let agent: String
    enum Proof: Sendable, Hashable {
        case credential(name: String, digest: CredentialDigest)
        case anonymous
        /// `explain`: no identity was presented, the agent is named by an admin.
        case dryRun
    }

    let proof: Proof

    init(agent: String, proof: Proof) {
        self.agent = agent
        self.proof = proof
    }

    /// The name of the credential used; nil for an anonymous connection.
    public var credential: String? {
        if case .credential(let name, _) = proof { return name }
        return nil
    }

    public var isAnonymous: Bool { proof == .anonymous }

    public var description: String {
        switch proof {
        case .credential(let name, _): "agent \"\(agent)\" (credential \"\(name)\")"
        case .anonymous: "agent \"\(agent)\" (anonymous)"
        case .dryRun: "agent \"\(agent)\" (dry run)"
        }
    }
}

/// The outcome of checking a connection's token and peer.
public enum AuthDecision: Sendable, Hashable, CustomStringConvertible {
    case authenticated(Principal, rule: String)
    case refused(AuthRefusal)

    public var principal: Principal? {
        if case .authenticated(let p, _) = self { return p }
        return nil
    }

    public var description: String {
        switch self {
        case .authenticated(let p, let rule): "authenticated \(p) by \(rule)"
        case .refused(let r): "refused: \(r)"
        }
    }
}

/// Why a connection (or, later, a call) was refused on identity grounds. `code` is stable for programs and the
/// audit trail; `reason` is for people. Neither ever contains a token.
public struct AuthRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    /// A stable refusal code. A struct rather than an enum so codes can be added without breaking callers.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// No token, and the policy has `anonymous: deny`.
        public static let missingCredential = Code(rawValue: "missing_credential")
        /// The token matches no credential in the policy.
        public static let unknownCredential = Code(rawValue: "unknown_credential")
        public static let expiredCredential = Code(rawValue: "expired_credential")
        public static let credentialNotYetValid = Code(rawValue: "credential_not_yet_valid")
        public static let revokedCredential = Code(rawValue: "revoked_credential")
        /// A valid token presented from a uid the agent does not allow.
        public static let uidNotAllowed = Code(rawValue: "uid_not_allowed")
        /// A valid token presented from outside the groups the agent allows.
        public static let gidNotAllowed = Code(rawValue: "gid_not_allowed")
        /// The credential (or the agent) was removed from the policy since the connection was authenticated.
        public static let credentialWithdrawn = Code(rawValue: "credential_withdrawn")

        public var description: String { rawValue }
    }

    public var code: Code
    /// The agent the token belongs to, when it matched one.
    public var agent: String?
    /// The policy rule that refused.
    public var rule: String
    public var reason: String

    public init(code: Code, agent: String?, rule: String, reason: String) {
        self.code = code
        self.agent = agent
        self.rule = rule
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(reason)" }
}

extension GovernancePolicy {
    /// Checks a connection's token (HELLO's credential) and the peer's uid/gid against the policy. Every stored
    /// digest is compared, in constant time, whichever matches, so timing says nothing about which agent a token
    /// belongs to. `wallNow` is Unix seconds.
    public func authenticate(token: [UInt8]?, peer: PeerCredentials, wallNow: Double) -> AuthDecision {
        guard let token, !token.isEmpty else {
            guard case .agent(let id) = anonymous else {
                return .refused(AuthRefusal(code: .missingCredential, agent: nil, rule: "anonymous",
                                            reason: "no credential was presented and anonymous access is denied"))
            }
            guard let agent = agents[id] else {
                return .refused(AuthRefusal(code: .unknownCredential, agent: nil, rule: "anonymous",
                                            reason: "anonymous access names agent \"\(id)\", which is not defined"))
            }
            if let refusal = checkPeer(peer, agent: agent, rule: "agents.\(id).agent_identity") {
                return .refused(refusal)
            }
            return .authenticated(Principal(agent: id, proof: .anonymous), rule: "anonymous")
        }
        let presented = CredentialDigest(hashing: token)
        var found: (AgentPolicy, AgentCredential)?
        // No early exit: the work is the same whichever credential (if any) matches.
        for agent in agents.values.sorted(by: { $0.id < $1.id }) {
            for credential in agent.credentials where credential.digest == presented && found == nil {
                found = (agent, credential)
            }
        }
        guard let (agent, credential) = found else {
            return .refused(AuthRefusal(code: .unknownCredential, agent: nil, rule: "agents",
                                        reason: "the credential matches no agent in the policy"))
        }
        let rule = credentialRule(agent: agent.id, credential: credential.name)
        if let refusal = checkValidity(credential, agent: agent.id, rule: rule, wallNow: wallNow) {
            return .refused(refusal)
        }
        if let refusal = checkPeer(peer, agent: agent, rule: "agents.\(agent.id).agent_identity") {
            return .refused(refusal)
        }
        let principal = Principal(agent: agent.id, proof: .credential(name: credential.name, digest: presented))
        return .authenticated(principal, rule: rule)
    }

    /// Re-checks an authenticated principal against the current policy (it may have been reloaded, the credential
    /// revoked, or its window passed since HELLO). Nil when it is still good.
    public func recheck(_ principal: Principal, wallNow: Double) -> AuthRefusal? {
        guard let agent = agents[principal.agent] else {
            return AuthRefusal(code: .credentialWithdrawn, agent: principal.agent, rule: "agents",
                               reason: "agent \"\(principal.agent)\" is no longer in the policy")
        }
        switch principal.proof {
        case .dryRun:
            return nil
        case .anonymous:
            guard anonymous == .agent(agent.id) else {
                return AuthRefusal(code: .credentialWithdrawn, agent: agent.id, rule: "anonymous",
                                   reason: "anonymous access as agent \"\(agent.id)\" is no longer allowed")
            }
            return nil
        case .credential(let name, let digest):
            guard let credential = agent.credentials.first(where: { $0.name == name && $0.digest == digest }) else {
                return AuthRefusal(code: .credentialWithdrawn, agent: agent.id,
                                   rule: "agents.\(agent.id).agent_identity.credentials",
                                   reason: "credential \"\(name)\" of agent \"\(agent.id)\" is no longer in the policy")
            }
            return checkValidity(credential, agent: agent.id, rule: credentialRule(agent: agent.id, credential: name),
                                 wallNow: wallNow)
        }
    }

    func credentialRule(agent: String, credential: String) -> String {
        "agents.\(agent).agent_identity.credentials.\(credential)"
    }

    func checkValidity(_ credential: AgentCredential, agent: String, rule: String, wallNow: Double) -> AuthRefusal? {
        switch credential.validity(at: wallNow) {
        case .valid:
            return nil
        case .revoked:
            return AuthRefusal(code: .revokedCredential, agent: agent, rule: rule,
                               reason: "\(credential) of agent \"\(agent)\" is revoked")
        case .notYetValid(let from):
            return AuthRefusal(code: .credentialNotYetValid, agent: agent, rule: rule,
                               reason: "\(credential) of agent \"\(agent)\" is not valid before "
                                   + RFC3339.format(from))
        case .expired(let at):
            return AuthRefusal(code: .expiredCredential, agent: agent, rule: rule,
                               reason: "\(credential) of agent \"\(agent)\" expired at \(RFC3339.format(at))")
        }
    }

    func checkPeer(_ peer: PeerCredentials, agent: AgentPolicy, rule: String) -> AuthRefusal? {
        if let uids = agent.peers.uids, !uids.contains(peer.uid) {
            return AuthRefusal(code: .uidNotAllowed, agent: agent.id, rule: rule + ".uids",
                               reason: "agent \"\(agent.id)\" may not be used from uid \(peer.uid)")
        }
        if let gids = agent.peers.gids, !peer.isMember(ofAny: gids) {
            return AuthRefusal(code: .gidNotAllowed, agent: agent.id, rule: rule + ".gids",
                               reason: "agent \"\(agent.id)\" may not be used from gid \(peer.gid)")
        }
        return nil
    }
}
