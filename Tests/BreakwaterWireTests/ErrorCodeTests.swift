import BreakwaterWire
import Foundation
import Testing

@Suite("ErrorCode against the spec's error-code table")
struct ErrorCodeTests {
    /// One row of the table in `protocol/PROTOCOL.md`'s "Error codes" section.
    struct SpecRow: Sendable, CustomStringConvertible {
        var code: UInt16
        var name: String
        var scope: String

        var description: String { name }
    }

    /// The rows `| 0x0001 | PROTOCOL_ERROR | connection | ... |` of the spec, in order.
    static func specRows() throws -> [SpecRow] {
        let spec = Vector.directory.deletingLastPathComponent().appendingPathComponent("PROTOCOL.md")
        let text = try String(contentsOf: spec, encoding: .utf8)
        return text.split(separator: "\n").compactMap { line -> SpecRow? in
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 3, cells[0].count == 6, cells[0].hasPrefix("0x"),
                let code = UInt16(cells[0].dropFirst(2), radix: 16)
            else {
                return nil
            }
            return SpecRow(code: code, name: cells[1], scope: cells[2])
        }
    }

    @Test("every code in the spec's table has the spec's name and scope")
    func specTableMatches() throws {
        let rows = try Self.specRows()
        #expect(rows.count >= 29)
        for row in rows {
            let code = ErrorCode(rawValue: row.code)
            #expect(code.name == row.name, "0x\(String(row.code, radix: 16)) is \(code.name) in Swift")
            #expect(code.isConnectionError == (row.scope == "connection"), "\(row.name) has scope \(row.scope)")
        }
    }

    @Test("CONFIGURATION_ERROR is call error 0x0113")
    func configurationError() throws {
        #expect(ErrorCode.configurationError.rawValue == 0x0113)
        #expect(ErrorCode.configurationError.name == "CONFIGURATION_ERROR")
        #expect(!ErrorCode.configurationError.isConnectionError)
        let row = try #require(try Self.specRows().first { $0.code == 0x0113 })
        #expect(row.name == "CONFIGURATION_ERROR")
        #expect(row.scope == "call")
    }
}
