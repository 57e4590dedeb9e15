/// The payload encoding of every frame that carries metadata: a sequence of fields, each
/// `tag: u16, length: u32, value` (big-endian). Receivers skip tags they do not know, so
/// messages can grow without a new protocol version.
///
/// Hand-written rather than protobuf or JSON: a dozen small fields per call do not justify a
/// code generator or a JSON parser on the hot path, and this format is trivial to write in any language.
public struct FieldWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reserving capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func bytes(_ tag: UInt16, _ value: some Collection<UInt8>) {
        appendUInt16(tag, to: &bytes)
        appendUInt32(UInt32(value.count), to: &bytes)
        bytes.append(contentsOf: value)
    }

    public mutating func string(_ tag: UInt16, _ value: String) {
        bytes(tag, value.utf8)
    }

    public mutating func string(_ tag: UInt16, _ value: String?) {
        if let value { string(tag, value) }
    }

    public mutating func uint8(_ tag: UInt16, _ value: UInt8) {
        bytes(tag, CollectionOfOne(value))
    }

    public mutating func uint16(_ tag: UInt16, _ value: UInt16) {
        var v: [UInt8] = []
        appendUInt16(value, to: &v)
        bytes(tag, v)
    }

    public mutating func uint32(_ tag: UInt16, _ value: UInt32) {
        var v: [UInt8] = []
        appendUInt32(value, to: &v)
        bytes(tag, v)
    }

    public mutating func uint32(_ tag: UInt16, _ value: UInt32?) {
        if let value { uint32(tag, value) }
    }
}

/// Reads a field list. Construction validates the framing of every field; getters check each value's width.
public struct FieldReader: Sendable {
    private let payload: [UInt8]
    private var fields: [(tag: UInt16, range: Range<Int>)] = []

    /// Parses `payload[start...]` as a field list; `what` names the frame in error messages.
    public init(_ payload: [UInt8], from start: Int = 0, what: FrameType) throws(WireError) {
        self.payload = payload
        var i = start
        while i < payload.count {
            guard payload.count - i >= 6 else {
                throw WireError(.protocolError, "\(what) payload ends inside a field header")
            }
            let tag = readUInt16(payload, at: i)
            let length = Int(readUInt32(payload, at: i + 2))
            i += 6
            guard length <= payload.count - i else {
                throw WireError(.protocolError, "\(what) field \(tag) runs past the end of the payload")
            }
            fields.append((tag, i..<(i + length)))
            i += length
        }
    }

    /// Every field with this tag, in order: for the nested lists whose every entry has one tag (ERROR's attempts).
    public func all(_ tag: UInt16) -> [ArraySlice<UInt8>] {
        fields.filter { $0.tag == tag }.map { payload[$0.range] }
    }

    /// The first field with this tag (later duplicates are ignored, as the spec says).
    public func raw(_ tag: UInt16) -> ArraySlice<UInt8>? {
        for f in fields where f.tag == tag { return payload[f.range] }
        return nil
    }

    public func bytes(_ tag: UInt16) -> [UInt8]? { raw(tag).map(Array.init) }

    public func string(_ tag: UInt16, _ what: FrameType) throws(WireError) -> String? {
        guard let r = raw(tag) else { return nil }
        guard let s = String(validating: r, as: UTF8.self) else {
            throw WireError(.protocolError, "\(what) field \(tag) is not valid UTF-8")
        }
        return s
    }

    public func uint8(_ tag: UInt16, _ what: FrameType) throws(WireError) -> UInt8? {
        guard let r = raw(tag) else { return nil }
        guard r.count == 1 else { throw WireError(.protocolError, "\(what) field \(tag) must be 1 byte") }
        return r[r.startIndex]
    }

    /// A bool: one byte, 0 or 1.
    public func bool(_ tag: UInt16, _ what: FrameType) throws(WireError) -> Bool? {
        guard let v = try uint8(tag, what) else { return nil }
        guard v <= 1 else { throw WireError(.protocolError, "\(what) field \(tag) is a bool: 0 or 1, not \(v)") }
        return v == 1
    }

    public func uint16(_ tag: UInt16, _ what: FrameType) throws(WireError) -> UInt16? {
        guard let r = raw(tag) else { return nil }
        guard r.count == 2 else { throw WireError(.protocolError, "\(what) field \(tag) must be 2 bytes") }
        return readUInt16(r, at: r.startIndex)
    }

    public func uint32(_ tag: UInt16, _ what: FrameType) throws(WireError) -> UInt32? {
        guard let r = raw(tag) else { return nil }
        guard r.count == 4 else { throw WireError(.protocolError, "\(what) field \(tag) must be 4 bytes") }
        return readUInt32(r, at: r.startIndex)
    }
}
