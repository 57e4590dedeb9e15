/// Who is at the other end of a Unix socket, as `SO_PEERCRED` reports it when the connection is accepted.
public struct PeerCredentials: Sendable, Hashable, Codable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// Supplementary groups, when the daemon looked them up; `SO_PEERCRED` itself gives only the primary gid.
    public var groups: [UInt32]

    public init(uid: UInt32, gid: UInt32, pid: Int32, groups: [UInt32] = []) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.groups = groups
    }

    /// Whether the primary group or any supplementary group is in `gids`.
    public func isMember(ofAny gids: Set<UInt32>) -> Bool {
        gids.contains(gid) || groups.contains(where: gids.contains)
    }

    public var description: String { "uid \(uid) gid \(gid) pid \(pid)" }
}

/// A set of Unix users and groups (`{uids: [...], gids: [...]}`): the approvers of a control, or who may issue
/// step-up credentials. A peer belongs when its uid or one of its groups is listed.
public struct PeerSet: Sendable, Hashable, Codable, CustomStringConvertible {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    public init(uids: Set<UInt32> = [], gids: Set<UInt32> = []) {
        self.uids = uids
        self.gids = gids
    }

    public var isEmpty: Bool { uids.isEmpty && gids.isEmpty }

    public func contains(_ peer: PeerCredentials) -> Bool {
        uids.contains(peer.uid) || peer.isMember(ofAny: gids)
    }

    public var description: String {
        let u = uids.sorted().map(String.init).joined(separator: ",")
        let g = gids.sorted().map(String.init).joined(separator: ",")
        return "uids [\(u)] gids [\(g)]"
    }
}

/// Which Unix users and groups may present an agent's credential. Each list that is set must match:
/// `uids` the peer's uid, `gids` its primary or a supplementary group. Nil means no restriction of that kind.
public struct PeerRestriction: Sendable, Hashable {
    public var uids: Set<UInt32>?
    public var gids: Set<UInt32>?

    public init(uids: Set<UInt32>? = nil, gids: Set<UInt32>? = nil) {
        self.uids = uids
        self.gids = gids
    }

    public static let none = PeerRestriction()
}
