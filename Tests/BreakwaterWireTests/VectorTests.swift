import BreakwaterWire
import Foundation
import Testing

/// One `protocol/vectors/*.vector` file.
struct Vector: CustomStringConvertible, Sendable {
    var name: String
    var frameType: String
    var stream: UInt32
    var flags: UInt8
    var expect: String
    var roundtrip: Bool
    var bytes: [UInt8]

    var description: String { name }

    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("protocol/vectors")

    static func all() throws -> [Vector] {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".vector") }.sorted()
        return try files.map { try parse(name: $0, text: String(contentsOf: directory.appendingPathComponent($0),
                                                                 encoding: .utf8)) }
    }

    static func parse(name: String, text: String) throws -> Vector {
        var v = Vector(name: name, frameType: "", stream: 0, flags: 0, expect: "ok", roundtrip: true, bytes: [])
        var inHex = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("#") { continue }
            if inHex {
                for byte in line.split(separator: " ") { v.bytes.append(UInt8(byte, radix: 16)!) }
                continue
            }
            if line == "hex:" {
                inHex = true
                continue
            }
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "frame": v.frameType = parts[1]
            case "stream": v.stream = UInt32(parts[1])!
            case "flags": v.flags = UInt8(parts[1].dropFirst(2), radix: 16)!
            case "expect": v.expect = parts[1]
            case "roundtrip": v.roundtrip = parts[1] != "no"
            default: Issue.record("unknown key \(parts[0]) in \(name)")
            }
        }
        return v
    }
}

/// Decodes one frame's payload into its typed message and encodes it again.
func reencode(_ frame: Frame) throws(WireError) -> Frame {
    switch frame.type {
    case .hello: return try Hello(frame: frame).frame()
    case .request: return try CallRequest(frame: frame).frame(streamID: frame.streamID,
                                                              endStream: frame.flags.contains(.endStream))
    case .response: return try CallResponse(frame: frame).frame(streamID: frame.streamID)
    case .trailers: return try CallTrailers(frame: frame).frame(streamID: frame.streamID)
    case .error: return try ErrorMessage(frame: frame).frame(streamID: frame.streamID)
    case .goAway: return try GoAway(frame: frame).frame()
    case .notice: return try CallNotice(frame: frame).frame(streamID: frame.streamID)
    case .admin: return try AdminRequest(frame: frame).frame(streamID: frame.streamID,
                                                              endStream: frame.flags.contains(.endStream))
    case .windowUpdate: return try WindowUpdate(frame: frame).frame(streamID: frame.streamID)
    case .authorize: return try AuthorizeRequest(frame: frame).frame(streamID: frame.streamID,
                                                                      endStream: frame.flags.contains(.endStream))
    case .data, .cancel, .ping, .pong, .started: return frame
    }
}

@Suite struct ProtocolVectors {
    @Test func vectorsArePresent() throws {
        #expect(try Vector.all().count >= 20)
    }

    @Test(arguments: try Vector.all())
    func vector(_ v: Vector) throws {
        var decoder = FrameDecoder()
        decoder.feed(v.bytes)
        do {
            guard let frame = try decoder.next() else {
                Issue.record("\(v.name): decoder wanted more bytes")
                return
            }
            let message = try reencode(frame)
            #expect(v.expect == "ok", "\(v.name) should have been refused with \(v.expect)")
            #expect(frame.type.rawValue == FrameType.allCases.first { "\($0)".uppercased() == v.frameType
                || ($0 == .goAway && v.frameType == "GOAWAY") || ($0 == .windowUpdate && v.frameType == "WINDOW_UPDATE") }?.rawValue)
            #expect(frame.streamID == v.stream)
            #expect(frame.flags.rawValue == v.flags)
            #expect(decoder.bufferedByteCount == 0)
            if v.roundtrip {
                #expect(message.encoded() == v.bytes, "re-encoding \(v.name) changed its bytes")
            }
        } catch {
            #expect(error.code.name == v.expect, "\(v.name): \(error)")
        }
    }

    @Test func unknownFieldIsSkipped() throws {
        let v = try #require(try Vector.all().first { $0.name.hasPrefix("18-") })
        var decoder = FrameDecoder()
        decoder.feed(v.bytes)
        let request = try CallRequest(frame: try #require(try decoder.next()))
        #expect(request.route == "default")
        #expect(request.stream == false)
    }
}
