import Foundation
import Yams

/// Walks a Yams node tree and collects every problem with its file, line and column: the readers of the config
/// (`ConfigLoader`) and of the policy (`PolicyLoader`) are extensions of it, in those files.
struct NodeReader {
    let file: String
    var issues: [ConfigIssue] = []

    init(file: String) { self.file = file }

    /// A config or policy file's text; an unreadable file is one issue at line 0.
    static func readFile(_ path: String) throws(ConfigError) -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(issues: [ConfigIssue(file: path, line: 0, column: 0, message: "cannot read file")])
        }
    }

    /// Yams' node tree for `yaml` (nil for an empty document) and a reader for its issues; a syntax error is one
    /// issue with its line and column.
    static func compose(_ yaml: String, file: String) throws(ConfigError) -> (NodeReader, Node?) {
        let reader = NodeReader(file: file)
        do {
            return (reader, try Yams.compose(yaml: yaml))
        } catch let error as YamlError {
            throw ConfigError(issues: [reader.syntaxIssue(error)])
        } catch {
            throw ConfigError(issues: [ConfigIssue(file: file, line: 0, column: 0, message: "YAML could not be read")])
        }
    }

    mutating func issue(_ node: Node?, _ message: String) {
        let mark = node?.mark
        issues.append(ConfigIssue(file: file, line: mark?.line ?? 0, column: mark?.column ?? 0, message: message))
    }

    func syntaxIssue(_ error: YamlError) -> ConfigIssue {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
             .composer(_, let problem, let mark, _):
            return ConfigIssue(file: file, line: mark.line, column: mark.column, message: "YAML syntax: " + problem)
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigIssue(file: file, line: context.mark.line, column: context.mark.column,
                               message: "duplicate keys: " + duplicates.joined(separator: ", "))
        default:
            return ConfigIssue(file: file, line: 0, column: 0, message: "YAML could not be read")
        }
    }

    /// The mapping's entries as (key, key node, value node), reporting keys outside `allowed`.
    mutating func entries(_ node: Node, _ what: String, allowed: Set<String>? = nil) -> [(String, Node, Node)] {
        guard let mapping = node.mapping else {
            issue(node, "\(what) must be a mapping")
            return []
        }
        var out: [(String, Node, Node)] = []
        for (k, v) in mapping {
            guard let key = k.string else {
                issue(k, "\(what): keys must be strings")
                continue
            }
            if let allowed, !allowed.contains(key) {
                let expected = allowed.sorted().joined(separator: ", ")
                issue(k, "\(what): unknown key \"\(key)\" (expected one of: \(expected))")
                continue
            }
            out.append((key, k, v))
        }
        return out
    }


    mutating func bool(_ node: Node, _ key: String) -> Bool? {
        guard let b = node.bool else {
            issue(node, "\(key) must be true or false")
            return nil
        }
        return b
    }

    mutating func fraction(_ node: Node, _ key: String) -> Double? {
        guard let x = node.float, x >= 0, x <= 1 else {
            issue(node, "\(key) must be a number from 0 to 1")
            return nil
        }
        return x
    }

    mutating func string(_ node: Node, _ key: String) -> String? {
        guard node.scalar != nil, let s = node.string, !s.isEmpty else {
            issue(node, "\(key) must be a non-empty string")
            return nil
        }
        return s
    }

    mutating func count(_ node: Node, _ key: String, min: Int) -> UInt32? {
        guard let n = node.int, n >= min, n <= Int(UInt32.max) else {
            issue(node, "\(key) must be a whole number from \(min) to \(UInt32.max)")
            return nil
        }
        return UInt32(n)
    }

    /// A duration; zero only where `allowZero` (a wait that may be none at all).
    mutating func duration(_ node: Node, _ key: String, allowZero: Bool = false) -> Duration? {
        guard let s = node.string, let d = DurationParser.parse(s), d > .zero || (allowZero && d == .zero) else {
            issue(node, "\(key) must be a \(allowZero ? "" : "positive ")duration such as "
                      + "\(allowZero ? "0s, " : "")500ms, 5s, 2m or 1h")
            return nil
        }
        return d
    }
}

/// Durations as admins write them: `250ms`, `5s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
public enum DurationParser {
    public static func parse(_ text: String) -> Duration? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            let number = s.dropLast(suffix.count)
            // "ms" also ends in "s": only accept a plain number before the suffix.
            guard let v = Double(number), v.isFinite, v >= 0 else { continue }
            return milliseconds(v * scale * 1000)
        }
        if let v = Double(s), v.isFinite, v >= 0 { return milliseconds(v * 1000) }
        return nil
    }

    /// Nil for a figure past what a duration holds (`1e300s`): the file gets an error, not a trap.
    private static func milliseconds(_ value: Double) -> Duration? {
        Int64(exactly: value.rounded()).map { .milliseconds($0) }
    }
}
