import Governance
import Resilience
import Testing

@Suite struct WallTimeTests {
    @Test(arguments: [
        ("1970-01-01T00:00:00Z", 0.0),
        ("2025-06-01T00:00:00Z", 1_748_736_000),
        ("2025-06-01t00:00:00z", 1_748_736_000),
        ("2025-06-01 02:00:00+02:00", 1_748_736_000),
        ("2025-05-31T19:30:00-04:30", 1_748_736_000),
        ("2024-02-29T12:00:00.5Z", 1_709_208_000.5),
    ])
    func parsesRFC3339(text: String, expected: Double) {
        #expect(RFC3339.parse(text) == expected)
    }

    @Test(arguments: ["2025-06-01", "2025-13-01T00:00:00Z", "2025-06-01T00:00:00", "2025-06-01T24:00:00Z",
                      "2025-06-01T00:00:00+0200", "yesterday"])
    func rejectsOthers(text: String) {
        #expect(RFC3339.parse(text) == nil)
    }

    @Test func formatsUTC() {
        #expect(RFC3339.format(1_748_736_000) == "2025-06-01T00:00:00Z")
        #expect(RFC3339.format(1_709_208_000.9) == "2024-02-29T12:00:00Z")
        #expect(RFC3339.format(-1) == "1969-12-31T23:59:59Z")
    }

    @Test func rateLimitSyntax() {
        #expect(ActionRateLimit(parsing: "1/min") == ActionRateLimit(count: 1, per: .seconds(60)))
        #expect(ActionRateLimit(parsing: "10/hour") == ActionRateLimit(count: 10, per: .seconds(3600)))
        #expect(ActionRateLimit(parsing: "5 / s") == ActionRateLimit(count: 5, per: .seconds(1)))
        #expect(ActionRateLimit(parsing: "100/day")?.description == "100/day")
        for bad in ["", "1", "0/min", "x/min", "1/fortnight", "1/min/2"] {
            #expect(ActionRateLimit(parsing: bad) == nil, "\(bad)")
        }
    }
}
