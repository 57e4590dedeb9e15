import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// Turns an audit event into the `NAME=value` items of one journal entry and hands them to `sd_journal_sendv`.
///
/// Each item is its own iovec, so a value is never parsed for line breaks (sd_journal_sendv switches to its
/// binary-safe framing by itself when a value holds one). The buffers are reused from entry to entry: the writer
/// thread owns one encoder.
struct JournalEntryEncoder {
    private let identifier: String
    private var bytes: [UInt8] = []
    private var ends: [Int] = []
    private var vectors: [iovec] = []

    init(syslogIdentifier: String) {
        identifier = syslogIdentifier
        bytes.reserveCapacity(2048)
        ends.reserveCapacity(48)
        vectors.reserveCapacity(48)
    }

    /// The items of `event`'s entry, in order: MESSAGE, MESSAGE_ID, PRIORITY, SYSLOG_IDENTIFIER, AUDIT_KIND, then
    /// the event's own fields.
    static func items(of event: AuditEvent, syslogIdentifier: String) -> [(AuditField, String)] {
        var items: [(AuditField, String)] = [
            (.message, AuditEvent.sanitised(event.summary)),
            (.messageID, event.kind.messageID),
            (.priority, String(event.priority.rawValue)),
            (.syslogIdentifier, syslogIdentifier),
            (.auditKind, event.kind.rawValue),
        ]
        for field in event.fields { items.append((field.field, field.value)) }
        return items
    }

    /// Sends `event` to journald; returns what `sd_journal_sendv` returned (0, or a negative errno).
    mutating func send(_ event: AuditEvent) -> Int32 {
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        for (field, value) in Self.items(of: event, syslogIdentifier: identifier) {
            bytes.append(contentsOf: field.name.utf8)
            bytes.append(UInt8(ascii: "="))
            bytes.append(contentsOf: value.utf8)
            ends.append(bytes.count)
        }
        return bytes.withUnsafeMutableBytes { raw -> Int32 in
            vectors.removeAll(keepingCapacity: true)
            var start = 0
            for end in ends {
                vectors.append(iovec(iov_base: raw.baseAddress! + start, iov_len: end - start))
                start = end
            }
            return vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }
}
