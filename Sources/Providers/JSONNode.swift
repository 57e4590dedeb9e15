/// A JSON tree that keeps what translating adapters must not lose: the order of object members (tool schemas and
/// tool arguments read in the order the app wrote them) and the exact text of numbers (`0.7` stays `0.7`, a 64-bit id
/// stays exact). Built from `JSONScanner`'s validated ranges and written back compactly, so the same input always
/// gives the same bytes. (A Codable tree would keep objects in a `Dictionary` and numbers as `Double`, which
/// reorders schemas and rounds large integers.)
indirect enum JSONNode: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's JSON text, as written.
    case number(String)
    case string(String)
    case array([JSONNode])
    case object([Member])

    struct Member: Sendable, Equatable {
        var key: String
        var value: JSONNode

        init(_ key: String, _ value: JSONNode) {
            self.key = key
            self.value = value
        }
    }

    /// Parses a whole document; nil when the bytes are not valid JSON.
    static func parse(_ bytes: [UInt8]) -> JSONNode? {
        let scanner = JSONScanner(bytes)
        guard let root = scanner.document() else { return nil }
        return JSONNode(scanner, root)
    }

    /// Parses a document given as a string (tool-call arguments are JSON inside a JSON string).
    static func parse(_ text: String) -> JSONNode? {
        parse(Array(text.utf8))
    }

    /// The value at `range` of a document the scanner has already validated.
    init(_ scanner: JSONScanner, _ range: Range<Int>) {
        switch scanner.kind(range) {
        case .object:
            self = .object(scanner.members(range).map { Member($0.key, JSONNode(scanner, $0.value)) })
        case .array:
            self = .array(scanner.elements(range).map { JSONNode(scanner, $0) })
        case .string:
            self = .string(scanner.string(range) ?? "")
        case .number:
            self = .number(String(decoding: scanner.bytes[range], as: UTF8.self))
        case .bool:
            self = .bool(scanner.bool(range) ?? false)
        case .null, nil:
            self = .null
        }
    }

    static func integer(_ value: Int) -> JSONNode { .number(String(value)) }

    /// An object from ordered pairs, leaving out the pairs whose value is nil (absent optional fields).
    static func fields(_ pairs: KeyValuePairs<String, JSONNode?>) -> JSONNode {
        .object(pairs.compactMap { pair in pair.value.map { Member(pair.key, $0) } })
    }

    // MARK: - Reading

    /// The first member named `key` of an object.
    subscript(key: String) -> JSONNode? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var array: [JSONNode]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var members: [Member]? {
        if case .object(let m) = self { return m }
        return nil
    }

    var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// A whole number written without fraction or exponent.
    var int: Int? {
        if case .number(let n) = self { return Int(n) }
        return nil
    }

    var double: Double? {
        if case .number(let n) = self { return Double(n) }
        return nil
    }

    var isNull: Bool { self == .null }

    // MARK: - Writing

    /// Compact JSON (no whitespace), members in order.
    var bytes: [UInt8] {
        var out: [UInt8] = []
        write(to: &out)
        return out
    }

    /// Compact JSON as a string, e.g. for an OpenAI tool call's `arguments`.
    var text: String { String(decoding: bytes, as: UTF8.self) }

    func write(to out: inout [UInt8]) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .number(let n): out += Array(n.utf8)
        case .string(let s): appendJSONString(s, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (i, e) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                e.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, m) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendJSONString(m.key, to: &out)
                out.append(UInt8(ascii: ":"))
                m.value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }
}
