import BreakwaterWire
import Foundation
import Config
import Governance
import NIOCore
import Resilience
import Systemd

/// An action an app asks to perform (AUTHORIZE), with its arguments reduced to what the daemon keeps: their hash,
/// which an approval is bound to, and each top-level field's canonical JSON, of which only the fields the policy
/// shows (`show_arguments`) ever leave this value.
struct AuthorizedAction: Sendable {
    let name: String
    /// SHA-256 (lower-case hex) of the arguments' canonical JSON.
    let argumentHash: String
    /// Each top-level argument's canonical JSON value.
    private let fields: [String: String]

    /// `arguments`: a JSON object (an empty body is `{}`). Anything else is BAD_REQUEST, whose message names the
    /// problem, never a value.
    init(name: String, arguments: [UInt8]) throws(WireError) {
        self.name = name
        let object: [String: Any]
        if arguments.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            object = [:]
        } else {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(arguments)),
                  let dictionary = parsed as? [String: Any] else {
                throw WireError(.badRequest, "the action's arguments must be a JSON object")
            }
            object = dictionary
        }
        let canonical = Self.canonicalJSON(object)
        argumentHash = CredentialDigest(hashing: canonical).hex
        fields = object.mapValues { String(decoding: Self.canonicalJSON($0), as: UTF8.self) }
    }

    /// The fields `names` picks, for approvers and the audit trail; names the arguments lack are left out.
    func shown(_ names: [String]) -> [String: String] {
        fields.filter { names.contains($0.key) }
    }

    /// Canonical JSON: object keys sorted, no whitespace, `/` not escaped — RFC 8785's form for the values apps
    /// send (strings, integers, booleans, null, nested objects and arrays with ASCII keys). Written with
    /// Foundation's serializer; the only hand-written part is choosing its options.
    static func canonicalJSON(_ value: Any) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: value,
                                                options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed]))
            ?? Data("null".utf8)
        return [UInt8](data)
    }

    /// A shown-fields object as one JSON text (for the audit trail's SHOWN_ARGUMENTS).
    static func json(_ shown: [String: String]) -> String {
        "{" + shown.keys.sorted().map { "\(String(decoding: canonicalJSON($0), as: UTF8.self)):\(shown[$0]!)" }
            .joined(separator: ",") + "}"
    }
}

extension DaemonContext {
    /// The driver for an AUTHORIZE: the same gate, approvals and audit as a call, and no upstream attempt. Without
    /// a policy every action is allowed (as every call is), and said so in the answer's rule.
    func makeAction(_ request: AuthorizeRequest, action: AuthorizedAction, streamID: StreamID, origin: CallOrigin,
                    sink: any CallSink, flow: ReaderFlow, eventLoop: any EventLoop) -> Result<CallDriver, ErrorMessage> {
        let requestID = request.requestID ?? RequestID.make()
        let access: AccessRequest?, subject: AuditSubject
        do {
            (access, subject) = try judge(origin, requestID: requestID, action: request.action, tenant: request.tenant,
                                          route: nil, model: nil, stepUpToken: request.stepUpToken,
                                          argumentHash: action.argumentHash)
        } catch {
            return .failure(error)
        }
        audit(.actionRequested, subject) { e in e[.argumentHash] = action.argumentHash }
        return .success(CallDriver(
            streamID: streamID, requestID: requestID, work: .action(action), stream: false, chain: [],
            fallback: FallbackPolicy(), deadline: deadline(request.timeoutMs), shared: self,
            eventLoop: eventLoop, connection: sink, flow: flow, access: access, subject: subject))
    }
}
