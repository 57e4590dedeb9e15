import Foundation
import Systemd
import Testing

/// `systemd/breakwater.catalog` explains every MESSAGE_ID, in a form `journalctl --update-catalog` accepts.
@Suite struct CatalogTests {
    static let catalogPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../systemd/breakwater.catalog").standardized.path

    struct Entry {
        var id: String
        var headers: [String: String]
        var body: [String]
    }

    /// Splits the catalog the way journald's catalog parser does: `-- ID` starts an entry, `Key: value` lines
    /// up to the first blank line are headers, the rest is the text; `#` lines are comments.
    static func parse(_ text: String) -> [Entry] {
        var entries: [Entry] = []
        var inHeaders = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("#") { continue }
            if line.hasPrefix("-- ") {
                entries.append(Entry(id: String(line.dropFirst(3)), headers: [:], body: []))
                inHeaders = true
                continue
            }
            guard !entries.isEmpty else { continue }
            if inHeaders {
                if line.isEmpty {
                    inHeaders = false
                } else if let colon = line.firstIndex(of: ":") {
                    let key = String(line[..<colon])
                    entries[entries.count - 1].headers[key] = line[line.index(after: colon)...]
                        .trimmingCharacters(in: .whitespaces)
                }
            } else {
                entries[entries.count - 1].body.append(line)
            }
        }
        return entries
    }

    @Test func oneEntryPerMessageID() throws {
        let entries = Self.parse(try String(contentsOfFile: Self.catalogPath, encoding: .utf8))
        let ids = entries.map(\.id)
        #expect(ids.count == Set(ids).count, "an id appears twice")
        #expect(Set(ids) == Set(AuditEventKind.allCases.map(\.messageID)))
        for entry in entries {
            #expect(entry.headers["Subject"]?.isEmpty == false, "\(entry.id) has no Subject")
            #expect(entry.headers["Defined-By"] == "breakwater", "\(entry.id)")
            #expect(entry.headers["Documentation"]?.isEmpty == false, "\(entry.id) has no Documentation")
            let words = entry.body.joined(separator: " ").split(separator: " ")
            #expect(words.count >= 30, "\(entry.id): the explanation is too short")
            // @FIELD@ substitutions must name fields entries really carry.
            for part in entry.body.joined().split(separator: "@", omittingEmptySubsequences: false).enumerated()
            where part.offset % 2 == 1 {
                #expect(AuditField.all.map(\.name).contains(String(part.element)), "@\(part.element)@ in \(entry.id)")
            }
        }
    }

    /// The real parser: `journalctl --update-catalog` in a private root, then `--list-catalog` shows each id.
    @Test func journalctlAcceptsTheCatalog() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("bw-catalog-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let dir = root.appendingPathComponent("usr/lib/systemd/catalog")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.catalogPath, toPath: dir.appendingPathComponent(
            "breakwater.catalog").path)

        let update = try run("/usr/bin/journalctl", ["--root=\(root.path)", "--update-catalog"])
        #expect(update.status == 0, "journalctl --update-catalog: \(update.output)")
        let list = try run("/usr/bin/journalctl", ["--root=\(root.path)", "--list-catalog"])
        #expect(list.status == 0, "\(list.output)")
        for kind in AuditEventKind.allCases {
            #expect(list.output.contains("\(kind.messageID) breakwater: Breakwater"), "\(kind) missing")
        }
    }

    private func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
