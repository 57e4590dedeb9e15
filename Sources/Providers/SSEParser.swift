/// One server-sent event.
public struct SSEEvent: Sendable, Hashable {
    public var event: String?
    /// The event's data lines joined by "\n", as bytes (for JSON payloads, what the scanner reads).
    public var data: [UInt8]
    public var id: String?

    public init(event: String? = nil, data: [UInt8], id: String? = nil) {
        self.event = event
        self.data = data
        self.id = id
    }

    public init(event: String? = nil, data: String, id: String? = nil) {
        self.init(event: event, data: Array(data.utf8), id: id)
    }

    public var dataString: String { String(decoding: data, as: UTF8.self) }
}

/// Incremental parser for `text/event-stream` (the WHATWG "event stream interpretation"): feed bytes as they arrive
/// in any split, take complete events out. Handles LF, CRLF and CR line ends, comments, multi-line data.
///
/// Written by hand because none of the packages we depend on parse SSE without also owning the HTTP client. It
/// works on whole lines found with a byte scan, since it runs once per streamed chunk on the daemon's hot path.
public struct SSEParser: Sendable {
    private var pending: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var eventName: String?
    private var lastID: String?
    /// The previous feed ended with CR: a LF at the start of the next one belongs to the same line end.
    private var skipLF = false

    public init() {}

    /// Feeds bytes; returns the events they completed, in order.
    public mutating func feed(_ bytes: [UInt8]) -> [SSEEvent] {
        var events: [SSEEvent] = []
        var start = 0
        if skipLF, bytes.first == 0x0A { start = 1 }
        skipLF = false
        var lineStart = start
        var i = start
        let count = bytes.count
        while i < count {
            let b = bytes[i]
            if b != 0x0A && b != 0x0D {
                i += 1
                continue
            }
            if pending.isEmpty {
                endLine(bytes[lineStart..<i], into: &events)
            } else {
                pending.append(contentsOf: bytes[lineStart..<i])
                let line = pending
                pending.removeAll(keepingCapacity: true)
                endLine(line[...], into: &events)
            }
            if b == 0x0D {
                if i + 1 < count {
                    if bytes[i + 1] == 0x0A { i += 1 }
                } else {
                    skipLF = true
                }
            }
            i += 1
            lineStart = i
        }
        if lineStart < count { pending.append(contentsOf: bytes[lineStart..<count]) }
        return events
    }

    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [SSEEvent] {
        feed(Array(bytes))
    }

    private mutating func endLine(_ line: ArraySlice<UInt8>, into events: inout [SSEEvent]) {
        guard let first = line.first else {
            // Blank line: dispatch.
            if hasData { events.append(SSEEvent(event: eventName, data: data, id: lastID)) }
            data.removeAll(keepingCapacity: true)
            hasData = false
            eventName = nil
            return
        }
        if first == 0x3A { return }  // ":" comment
        let colon = line.firstIndex(of: 0x3A)
        let field = line[line.startIndex..<(colon ?? line.endIndex)]
        var valueStart = colon.map { $0 + 1 } ?? line.endIndex
        if valueStart < line.endIndex, line[valueStart] == 0x20 { valueStart += 1 }
        let value = line[valueStart..<line.endIndex]
        if field.elementsEqual("data".utf8) {
            if hasData { data.append(0x0A) }
            data.append(contentsOf: value)
            hasData = true
        } else if field.elementsEqual("event".utf8) {
            eventName = String(decoding: value, as: UTF8.self)
        } else if field.elementsEqual("id".utf8) {
            lastID = String(decoding: value, as: UTF8.self)
        }
        // "retry" and unknown fields are ignored, as the spec says.
    }
}
