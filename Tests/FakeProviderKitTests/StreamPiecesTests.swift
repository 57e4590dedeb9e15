@testable import FakeProviderKit
import Testing

/// How the fake cuts an answer into stream chunks, and counts its words (its token count).
@Suite struct StreamPiecesTests {
    @Test(arguments: [
        "word word word word word word word",
        "héllo wörld 👍🏽 done",  // multi-byte characters and a two-scalar emoji
        "line one\r\nline two\r\nline three",  // CR LF is one character
        "ab",
    ])
    func countedPiecesConcatenateBackAndKeepCharactersWhole(_ content: String) {
        for count in [1, 3, 7, 100] {
            let pieces = ResponsePlan.pieces(of: content, count: count)
            #expect(pieces.joined() == content)
            #expect(pieces.count == min(count, content.count))
            #expect(pieces.allSatisfy { !$0.isEmpty })
            // Near-equal: no piece is more than one character longer than another.
            let lengths = pieces.map(\.count)
            #expect(lengths.max()! - lengths.min()! <= 1, "\(count) pieces: \(lengths)")
        }
    }

    @Test func aLongASCIIAnswerIsCutEvenly() {
        let content = String(repeating: "word ", count: 100_000)
        let pieces = ResponsePlan.pieces(of: content, count: 100)
        #expect(pieces.count == 100)
        #expect(pieces.allSatisfy { $0.utf8.count == 5_000 })
        #expect(pieces.joined() == content)
    }

    @Test func wordsAreRunsOfNonWhitespace() {
        #expect(ChatRequest.wordCount("") == 0)
        #expect(ChatRequest.wordCount("  one\ttwo\nthree  ") == 3)
        #expect(ChatRequest.wordCount("héllo 👍🏽") == 2)
        #expect(ChatRequest.wordCount(String(repeating: "word ", count: 100_000)) == 100_000)
    }

    @Test func quotingEscapesOnlyWhatJSONNeeds() {
        #expect(JSONText.quoted("plain é 👍") == "\"plain é 👍\"")
        #expect(JSONText.quoted("a\"b\\c\nd\u{01}") == "\"a\\\"b\\\\c\\nd\\u0001\"")
    }
}
