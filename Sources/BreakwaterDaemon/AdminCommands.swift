import BreakwaterWire
import Config
import Foundation
import Resilience
import Synchronization

/// The admin commands the `breakwater` CLI sends over the daemon's own socket. Only callers the config names as
/// admins (by uid or gid from SO_PEERCRED) may run them; the answer is a JSON document.
enum AdminCommands {
    static func run(_ command: String, arguments: [UInt8], peer: PeerCredentials?,
                    shared: DaemonContext) -> Result<[UInt8], ErrorMessage> {
        guard let peer, shared.router.config.admins.allows(uid: peer.uid, gid: peer.gid) else {
            return .failure(ErrorMessage(code: .forbidden,
                                         message: "admin commands are for the uids/gids in the config's admins"))
        }
        switch command {
        case "status":
            return .success(json(status(shared)))
        default:
            return .failure(ErrorMessage(code: .badRequest, message: "unknown admin command \"\(command)\""))
        }
    }

    static func status(_ shared: DaemonContext) -> [String: Any] {
        let s = shared.stats
        let now = shared.resilience.clock.now()
        return [
            "connections": s.connections.load(ordering: .relaxed),
            "calls_in_flight": s.callsInFlight.load(ordering: .relaxed),
            "calls": s.callsStarted.load(ordering: .relaxed),
            "calls_failed": s.callsFailed.load(ordering: .relaxed),
            "protocol_errors": s.protocolErrors.load(ordering: .relaxed),
            "open_breakers": shared.resilience.openBreakers.map { target, reopens in
                ["target": target, "reopens_in_ms": reopens.map { max(0, ($0 - now).nanoseconds / 1_000_000) } ?? 0]
                    as [String: Any]
            },
        ]
    }

    static func json(_ object: Any) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }
}
