import Foundation

/// One journal entry as `journalctl -o json` shows it: every field with its values (a field may repeat).
public struct JournalEntry: Sendable, Equatable, CustomStringConvertible {
    /// Field name to values, in the order journalctl listed them. Binary values are decoded as UTF-8 (invalid
    /// bytes become U+FFFD).
    public let fields: [String: [String]]

    /// An entry with these fields.
    public init(fields: [String: [String]]) {
        self.fields = fields
    }

    /// The first value of `name`, or nil.
    public subscript(name: String) -> String? { fields[name]?.first }

    /// Every value of `name` (more than one when the field repeats).
    public func values(_ name: String) -> [String] { fields[name] ?? [] }

    /// `MESSAGE_ID`.
    public var messageID: String? { self["MESSAGE_ID"] }
    /// `MESSAGE`.
    public var message: String? { self["MESSAGE"] }
    /// `PRIORITY` as a number.
    public var priority: Int? { self["PRIORITY"].flatMap { Int($0) } }

    /// Field names the entry's sender set (journald's own trusted fields start with `_`, journalctl's addresses
    /// with `__`).
    public var userFieldNames: [String] { fields.keys.filter { !$0.hasPrefix("_") }.sorted() }

    public var description: String {
        fields.keys.sorted().map { "\($0)=\(fields[$0]!.joined(separator: "|"))" }.joined(separator: " ")
    }

    /// Parses one line of `journalctl -o json`: values are strings, arrays of byte values (binary data), null
    /// (a field too large to show), or arrays of those (a repeated field).
    public init?(jsonLine: some StringProtocol) {
        guard let data = jsonLine.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        var fields: [String: [String]] = [:]
        for (name, raw) in object {
            if let array = raw as? [Any], !array.isEmpty, !(array.allSatisfy { $0 is NSNumber }) {
                fields[name] = array.compactMap(JournalEntry.decode)
            } else if let value = JournalEntry.decode(raw) {
                fields[name] = [value]
            }
        }
        self.fields = fields
    }

    private static func decode(_ raw: Any) -> String? {
        if let text = raw as? String { return text }
        if let bytes = raw as? [NSNumber] { return String(decoding: bytes.map { $0.uint8Value }, as: UTF8.self) }
        return nil
    }
}
