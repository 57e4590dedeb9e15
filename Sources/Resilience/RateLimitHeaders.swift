/// What a provider's answer said about when to try again and how much quota is left.
public struct RateLimitInfo: Sendable, Hashable {
    /// How long the provider asked us to wait (`retry-after-ms`, `Retry-After` in seconds or as an HTTP-date).
    public var retryAfter: Duration?
    public var remainingRequests: Int?
    public var remainingTokens: Int?
    public var limitRequests: Int?
    public var limitTokens: Int?
    /// When the request quota is full again, from now.
    public var resetRequests: Duration?
    /// When the token quota is full again, from now.
    public var resetTokens: Duration?

    public init() {}

    /// The wait to honour before the next call: Retry-After if given, else the reset of an exhausted quota.
    public var suggestedWait: Duration? {
        if let retryAfter { return retryAfter }
        var wait: Duration?
        if remainingRequests == 0, let r = resetRequests { wait = r }
        if remainingTokens == 0, let r = resetTokens { wait = max(wait ?? .zero, r) }
        return wait
    }
}

/// Reads the rate-limit headers of OpenAI (`x-ratelimit-*`, resets as Go-style durations such as `6m0s`),
/// Anthropic (`anthropic-ratelimit-*`, resets as RFC 3339 timestamps) and the standard `Retry-After`
/// (delta-seconds or HTTP-date) and `retry-after-ms`.
///
/// Pure: the caller passes the wall-clock time (seconds since 1970) that absolute dates are measured from.
/// Hand-written because none of our dependencies parse HTTP-dates or Go durations without Foundation's
/// locale-dependent formatters.
public enum RateLimitHeaders {
    public static func parse(_ headers: [(name: String, value: String)], wallNow: Double) -> RateLimitInfo {
        var info = RateLimitInfo()
        var retryAfterMs: Duration?
        var retryAfter: Duration?
        for (rawName, rawValue) in headers {
            guard let field = Field(rawName) else { continue }
            let value = rawValue.trimmingSpaces
            switch field {
            case .retryAfterMs:
                if let ms = Double(value), ms >= 0 { retryAfterMs = .seconds(ms / 1000) }
            case .retryAfter:
                if let s = Double(value), s >= 0 {
                    retryAfter = .seconds(s)
                } else if let date = HTTPDate.parse(value) {
                    retryAfter = .seconds(max(0, date - wallNow))
                }
            case .remainingRequests: info.remainingRequests = Int(value)
            case .remainingTokens: info.remainingTokens = Int(value)
            case .limitRequests: info.limitRequests = Int(value)
            case .limitTokens: info.limitTokens = Int(value)
            case .resetRequests: info.resetRequests = GoDuration.parse(value)
            case .resetTokens: info.resetTokens = GoDuration.parse(value)
            case .resetRequestsAt: info.resetRequests = RFC3339.parse(value).map { .seconds(max(0, $0 - wallNow)) }
            case .resetTokensAt: info.resetTokens = RFC3339.parse(value).map { .seconds(max(0, $0 - wallNow)) }
            }
        }
        // retry-after-ms is the more precise of the two when both are sent (OpenAI sends both).
        info.retryAfter = retryAfterMs ?? retryAfter
        return info
    }

    /// The headers read, by name. Every answer's headers pass through here, so a name is matched against these
    /// byte by byte, ignoring ASCII case, rather than lowercased into a new string first (perf: the lowercased
    /// copies and string switch were ~4% of a call's CPU at 64 in flight).
    private enum Field: CaseIterable {
        case retryAfterMs, retryAfter, remainingRequests, remainingTokens, limitRequests, limitTokens
        case resetRequests, resetTokens, resetRequestsAt, resetTokensAt

        var names: [String] {
            switch self {
            case .retryAfterMs: ["retry-after-ms"]
            case .retryAfter: ["retry-after"]
            case .remainingRequests: ["x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"]
            case .remainingTokens: ["x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining"]
            case .limitRequests: ["x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"]
            case .limitTokens: ["x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit"]
            case .resetRequests: ["x-ratelimit-reset-requests"]
            case .resetTokens: ["x-ratelimit-reset-tokens"]
            case .resetRequestsAt: ["anthropic-ratelimit-requests-reset"]
            case .resetTokensAt: ["anthropic-ratelimit-tokens-reset"]
            }
        }

        static let table: [(name: [UInt8], field: Field)] = allCases.flatMap { f in f.names.map { (Array($0.utf8), f) } }

        init?(_ name: String) {
            // Every name read starts with r, x or a: the others are skipped at their first byte.
            guard let first = name.utf8.first.map(Self.lower), first == 0x72 || first == 0x78 || first == 0x61 else {
                return nil
            }
            let count = name.utf8.count
            for (candidate, field) in Self.table where candidate.count == count
                && zip(name.utf8, candidate).allSatisfy({ Self.lower($0) == $1 }) {
                self = field
                return
            }
            return nil
        }

        private static func lower(_ byte: UInt8) -> UInt8 { byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte }
    }
}

/// Go's `time.Duration` text as OpenAI sends it: `20ms`, `1s`, `6m0s`, `1h2m3.5s`, `850µs`.
public enum GoDuration {
    public static func parse(_ text: String) -> Duration? {
        var total = 0.0
        var number = ""
        var unit = ""
        var sawAny = false
        func flush() -> Bool {
            guard let v = Double(number) else { return false }
            let scale: Double
            switch unit {
            case "h": scale = 3600
            case "m": scale = 60
            case "s": scale = 1
            case "ms": scale = 1e-3
            case "us", "µs", "μs": scale = 1e-6
            case "ns": scale = 1e-9
            default: return false
            }
            total += v * scale
            number = ""
            unit = ""
            sawAny = true
            return true
        }
        // By scalar, not by Character: only ASCII digits make a number (Double reads no others), and a reset
        // header is read on every answer.
        for scalar in text.unicodeScalars {
            if (0x30...0x39).contains(scalar.value) || scalar == "." {
                if !unit.isEmpty { guard flush() else { return nil } }
                number.unicodeScalars.append(scalar)
            } else {
                guard !number.isEmpty else { return nil }
                unit.unicodeScalars.append(scalar)
            }
        }
        if !number.isEmpty || !unit.isEmpty {
            if number == "0", unit.isEmpty { return .zero }
            guard flush() else { return nil }
        }
        return sawAny ? .seconds(total) : nil
    }
}

/// HTTP-dates (RFC 9110 IMF-fixdate, e.g. `Wed, 21 Oct 2015 07:28:00 GMT`), as seconds since 1970.
public enum HTTPDate {
    static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    public static func parse(_ text: String) -> Double? {
        // "Wed, 21 Oct 2015 07:28:00 GMT"
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT",
              let day = Int(parts[1]), let month = months.firstIndex(of: parts[2].lowercased()),
              let year = Int(parts[3]) else { return nil }
        let clock = parts[4].split(separator: ":")
        guard clock.count == 3, let h = Int(clock[0]), let m = Int(clock[1]), let s = Int(clock[2]) else { return nil }
        return CivilTime.seconds(year: year, month: month + 1, day: day, hour: h, minute: m, second: Double(s))
    }
}

/// RFC 3339 timestamps, e.g. `2024-04-01T12:00:30Z` or `2024-04-01T12:00:30.25+02:00`, as seconds since 1970.
public enum RFC3339 {
    public static func parse(_ text: String) -> Double? {
        let chars = Array(text.utf8)
        func int(_ r: Range<Int>) -> Int? {
            guard r.upperBound <= chars.count else { return nil }
            return Int(String(decoding: chars[r], as: UTF8.self))
        }
        guard chars.count >= 20, chars[4] == UInt8(ascii: "-"), chars[7] == UInt8(ascii: "-"),
              chars[10] == UInt8(ascii: "T") || chars[10] == UInt8(ascii: "t") || chars[10] == UInt8(ascii: " "),
              chars[13] == UInt8(ascii: ":"), chars[16] == UInt8(ascii: ":"),
              let y = int(0..<4), let mo = int(5..<7), let d = int(8..<10),
              let h = int(11..<13), let mi = int(14..<16), let s = int(17..<19) else { return nil }
        var i = 19
        var fraction = 0.0
        if i < chars.count, chars[i] == UInt8(ascii: ".") {
            var j = i + 1
            while j < chars.count, chars[j] >= 0x30, chars[j] <= 0x39 { j += 1 }
            fraction = Double("0" + String(decoding: chars[i..<j], as: UTF8.self)) ?? 0
            i = j
        }
        guard i < chars.count else { return nil }
        var offset = 0
        switch chars[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            guard i + 1 == chars.count else { return nil }
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard i + 6 == chars.count, chars[i + 3] == UInt8(ascii: ":"),
                  let oh = int((i + 1)..<(i + 3)), let om = int((i + 4)..<(i + 6)) else { return nil }
            offset = (oh * 3600 + om * 60) * (chars[i] == UInt8(ascii: "+") ? 1 : -1)
        default:
            return nil
        }
        guard let base = CivilTime.seconds(year: y, month: mo, day: d, hour: h, minute: mi, second: Double(s))
        else { return nil }
        return base + fraction - Double(offset)
    }
}

enum CivilTime {
    /// Seconds since 1970-01-01T00:00:00Z of a UTC civil time (Howard Hinnant's days-from-civil).
    static func seconds(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Double) -> Double? {
        guard (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour), (0...59).contains(minute),
              second >= 0, second < 61 else { return nil }
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return Double(days * 86400 + hour * 3600 + minute * 60) + second
    }
}

extension String {
    var trimmingSpaces: String {
        let isSpace = { (b: UInt8) in b == 0x20 || b == 0x09 }
        guard let first = utf8.first, let last = utf8.last, isSpace(first) || isSpace(last) else { return self }
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
