/// A strict JSON (RFC 8259) scanner that validates a document and finds the byte ranges of values without
/// building a tree.
///
/// Hand-written because the OpenAI path only needs a few top-level fields (`messages`, `model`, `stream`,
/// `usage`, `error`) of bodies it otherwise passes through unchanged, and Foundation's JSONDecoder spent about
/// 40% of the daemon's CPU decoding whole bodies into Codable trees (perf, breakwater-bench). Adapters that
/// translate bodies between providers build a `JSONNode` tree from the scanner's ranges instead.
public struct JSONScanner {
    public let bytes: [UInt8]
    /// Deeper nesting is refused, so a hostile body cannot exhaust the stack.
    public static let maxDepth = 256

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// The range of the whole document's single value, or nil when the bytes are not valid JSON.
    public func document() -> Range<Int>? {
        var i = skipWhitespace(0)
        let start = i
        guard let end = skipValue(&i, depth: 0) else { return nil }
        guard skipWhitespace(i) == bytes.count else { return nil }
        return start..<end
    }

    public enum Kind: Equatable {
        case object, array, string, number, bool, null
    }

    public func kind(_ range: Range<Int>) -> Kind? {
        guard let first = range.first.map({ bytes[$0] }) else { return nil }
        switch first {
        case UInt8(ascii: "{"): return .object
        case UInt8(ascii: "["): return .array
        case UInt8(ascii: "\""): return .string
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool
        case UInt8(ascii: "n"): return .null
        default: return .number
        }
    }

    /// The members of an object value (already validated by `document()`), in order, with decoded keys.
    public func members(_ object: Range<Int>) -> [(key: String, value: Range<Int>)] {
        var out: [(String, Range<Int>)] = []
        forEachMember(object) { key, value in
            guard let key = string(key) else { return false }
            out.append((key, value))
            return true
        }
        return out
    }

    /// Calls `body` with each member of an object value (already validated), in order: the range of its key (a
    /// string value, quotes included) and of its value, until `body` returns false. Allocates nothing: a streamed
    /// answer's every event is scanned for two keys, and decoding each key into a `String` was most of that.
    public func forEachMember(_ object: Range<Int>, _ body: (_ key: Range<Int>, _ value: Range<Int>) -> Bool) {
        var i = skipWhitespace(object.lowerBound + 1)
        while i < object.upperBound, bytes[i] != UInt8(ascii: "}") {
            let keyStart = i
            guard skipString(&i) != nil else { return }
            let key = keyStart..<i
            i = skipWhitespace(i) + 1  // ':'
            i = skipWhitespace(i)
            let valueStart = i
            guard let valueEnd = skipValue(&i, depth: 0), body(key, valueStart..<valueEnd) else { return }
            i = skipWhitespace(i)
            if i < bytes.count, bytes[i] == UInt8(ascii: ",") { i = skipWhitespace(i + 1) }
        }
    }

    /// Whether the string value at `range` is `text`: its bytes compared in place, decoded only if it has escapes.
    public func string(_ range: Range<Int>, is text: String) -> Bool {
        guard kind(range) == .string, range.count >= 2 else { return false }
        let inner = bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]
        if inner.contains(UInt8(ascii: "\\")) { return string(range) == text }
        return inner.elementsEqual(text.utf8)
    }

    /// The member `key` of an object value (the first, if it repeats).
    public func member(_ object: Range<Int>, _ key: String) -> Range<Int>? {
        var found: Range<Int>?
        forEachMember(object) { k, value in
            if string(k, is: key) { found = value }
            return found == nil
        }
        return found
    }

    /// The elements of an array value (already validated).
    public func elements(_ array: Range<Int>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = skipWhitespace(array.lowerBound + 1)
        while i < array.upperBound, bytes[i] != UInt8(ascii: "]") {
            let start = i
            guard let end = skipValue(&i, depth: 0) else { return out }
            out.append(start..<end)
            i = skipWhitespace(i)
            if i < bytes.count, bytes[i] == UInt8(ascii: ",") { i = skipWhitespace(i + 1) }
        }
        return out
    }

    /// Decodes a string value, escapes included.
    public func string(_ range: Range<Int>) -> String? {
        guard kind(range) == .string else { return nil }
        let inner = (range.lowerBound + 1)..<(range.upperBound - 1)
        if !bytes[inner].contains(UInt8(ascii: "\\")) {
            return String(decoding: bytes[inner], as: UTF8.self)
        }
        var out: [UInt8] = []
        var i = inner.lowerBound
        while i < inner.upperBound {
            let b = bytes[i]
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                i += 1
                continue
            }
            let e = bytes[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                guard var scalar = hex4(i) else { return nil }
                i += 4
                if (0xD800..<0xDC00).contains(scalar), i + 6 <= inner.upperBound, bytes[i] == UInt8(ascii: "\\"),
                   bytes[i + 1] == UInt8(ascii: "u"), let low = hex4(i + 2), (0xDC00..<0xE000).contains(low) {
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
                }
                out.append(contentsOf: String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8)
            default: out.append(e)  // \" \\ \/
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A whole-number value.
    public func int(_ range: Range<Int>) -> Int? {
        guard kind(range) == .number else { return nil }
        return Int(String(decoding: bytes[range], as: UTF8.self))
    }

    public func bool(_ range: Range<Int>) -> Bool? {
        guard kind(range) == .bool else { return nil }
        return bytes[range.lowerBound] == UInt8(ascii: "t")
    }

    // MARK: - Scanning

    private func hex4(_ i: Int) -> UInt32? {
        guard i + 4 <= bytes.count else { return nil }
        return UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16)
    }

    func skipWhitespace(_ start: Int) -> Int {
        var i = start
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return i
            }
        }
        return i
    }

    /// Skips one value starting at `i` (no leading whitespace), validating it; returns its end.
    func skipValue(_ i: inout Int, depth: Int) -> Int? {
        guard i < bytes.count, depth < Self.maxDepth else { return nil }
        switch bytes[i] {
        case UInt8(ascii: "{"): return skipObject(&i, depth: depth + 1)
        case UInt8(ascii: "["): return skipArray(&i, depth: depth + 1)
        case UInt8(ascii: "\""): return skipString(&i)
        case UInt8(ascii: "t"): return skipLiteral(&i, "true")
        case UInt8(ascii: "f"): return skipLiteral(&i, "false")
        case UInt8(ascii: "n"): return skipLiteral(&i, "null")
        default: return skipNumber(&i)
        }
    }

    private func skipLiteral(_ i: inout Int, _ word: StaticString) -> Int? {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { return nil }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { return nil }
        i += n
        return i
    }

    private func skipNumber(_ i: inout Int) -> Int? {
        let start = i
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count, isDigit(bytes[i]) else { return nil }
        if bytes[i] == UInt8(ascii: "0") { i += 1 } else { while i < bytes.count, isDigit(bytes[i]) { i += 1 } }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard i < bytes.count, isDigit(bytes[i]) else { return nil }
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count, isDigit(bytes[i]) else { return nil }
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        }
        return i > start ? i : nil
    }

    private func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    func skipString(_ i: inout Int) -> Int? {
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
        i += 1
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                i += 1
                return i
            }
            if b < 0x20 { return nil }  // control characters must be escaped
            if b == UInt8(ascii: "\\") {
                guard i + 1 < bytes.count else { return nil }
                switch bytes[i + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 2
                case UInt8(ascii: "u"):
                    guard hex4(i + 2) != nil else { return nil }
                    i += 6
                default:
                    return nil
                }
                continue
            }
            i += 1
        }
        return nil
    }

    private func skipArray(_ i: inout Int, depth: Int) -> Int? {
        i = skipWhitespace(i + 1)
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
            i += 1
            return i
        }
        while true {
            guard skipValue(&i, depth: depth) != nil else { return nil }
            i = skipWhitespace(i)
            guard i < bytes.count else { return nil }
            if bytes[i] == UInt8(ascii: "]") {
                i += 1
                return i
            }
            guard bytes[i] == UInt8(ascii: ",") else { return nil }
            i = skipWhitespace(i + 1)
        }
    }

    private func skipObject(_ i: inout Int, depth: Int) -> Int? {
        i = skipWhitespace(i + 1)
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
            return i
        }
        while true {
            guard skipString(&i) != nil else { return nil }
            i = skipWhitespace(i)
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
            i = skipWhitespace(i + 1)
            guard skipValue(&i, depth: depth) != nil else { return nil }
            i = skipWhitespace(i)
            guard i < bytes.count else { return nil }
            if bytes[i] == UInt8(ascii: "}") {
                i += 1
                return i
            }
            guard bytes[i] == UInt8(ascii: ",") else { return nil }
            i = skipWhitespace(i + 1)
        }
    }
}

/// Appends `s` as a JSON string literal.
func appendJSONString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
        case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
        case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
        case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
        case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
        case 0..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            out += Array("\\u00".utf8) + [hex[Int(b >> 4)], hex[Int(b & 0xF)]]
        default: out.append(b)
        }
    }
    out.append(UInt8(ascii: "\""))
}
