/// One server-sent event.
public struct SSEEvent: Sendable, Hashable {
    public var event: String?
    public var data: String
    public var id: String?

    public init(event: String? = nil, data: String, id: String? = nil) {
        self.event = event
        self.data = data
        self.id = id
    }
}

/// Incremental parser for `text/event-stream` (the WHATWG "event stream interpretation"): feed bytes as they arrive
/// in any split, take complete events out. Handles LF, CRLF and CR line ends, comments, multi-line data.
///
/// Written by hand because none of the packages we depend on parse SSE without also owning the HTTP client.
public struct SSEParser: Sendable {
    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var eventName: String?
    private var lastID: String?
    private var lastWasCR = false

    public init() {}

    /// Feeds bytes; returns the events they completed, in order.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [SSEEvent] {
        var events: [SSEEvent] = []
        for b in bytes {
            if b == 0x0A, lastWasCR {
                lastWasCR = false
                continue
            }
            lastWasCR = (b == 0x0D)
            if b == 0x0A || b == 0x0D {
                if let e = endLine() { events.append(e) }
            } else {
                line.append(b)
            }
        }
        return events
    }

    private mutating func endLine() -> SSEEvent? {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            // Blank line: dispatch.
            defer {
                data.removeAll(keepingCapacity: true)
                hasData = false
                eventName = nil
            }
            guard hasData else { return nil }
            return SSEEvent(event: eventName, data: String(decoding: data, as: UTF8.self), id: lastID)
        }
        if line[0] == 0x3A { return nil }  // ":" comment
        let colon = line.firstIndex(of: 0x3A)
        let field = colon.map { Array(line[..<$0]) } ?? line
        var value = colon.map { Array(line[($0 + 1)...]) } ?? []
        if value.first == 0x20 { value.removeFirst() }
        switch String(decoding: field, as: UTF8.self) {
        case "data":
            if hasData { data.append(0x0A) }
            data.append(contentsOf: value)
            hasData = true
        case "event":
            eventName = String(decoding: value, as: UTF8.self)
        case "id":
            lastID = String(decoding: value, as: UTF8.self)
        default:
            break  // "retry" and unknown fields are ignored, as the spec says.
        }
        return nil
    }
}
