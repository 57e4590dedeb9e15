import ArgumentParser
import Config
import Foundation
import Governance

/// `breakwater config`: config tools that need no running daemon.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Config tools.",
                                                    subcommands: [Check.self])

    /// `breakwater config check [FILE]`: the daemon's own loaders (the ones `breakwaterd --check-config` runs) on
    /// a config file and the policy file it names, so a file can be checked before a reload or a restart.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a config file and its policy file locally (no daemon needed); every error with "
                + "file:line:column, exit status 1 on any.")

        @Argument(help: ArgumentHelp(
            "The config file (default: $CONFIGURATION_DIRECTORY/breakwater.yaml, else "
                + "/etc/breakwater/breakwater.yaml)."))
        var file: String?
        @Option(help: "Policy file to check instead of the one the config names (`policy:`).") var policy: String?
        @Flag(help: "Print the result as JSON.") var json = false

        /// Where systemd's `ConfigurationDirectory=breakwater` puts the config, else the installed default.
        static func defaultFile(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
            // ConfigurationDirectory= may list several paths, separated by colons: the first is ours.
            if let dir = environment["CONFIGURATION_DIRECTORY"]?.split(separator: ":").first {
                return dir + "/breakwater.yaml"
            }
            return "/etc/breakwater/breakwater.yaml"
        }

        func run() async throws {
            let path = file ?? Self.defaultFile()
            var report: [String: Any] = ["file": path]
            var issues: [ConfigIssue] = []
            var policyPath = policy
            do {
                let c = try ConfigLoader.load(file: path)
                report["providers"] = c.providers.count
                report["routes"] = c.routes.count
                policyPath = policy ?? c.policyPath
                if !json { print("\(path): OK (\(c.providers.count) providers, \(c.routes.count) routes)") }
            } catch {
                issues += error.issues
            }
            report["errors"] = issues.map(Self.object)

            var policyOK = true
            if let policyPath {
                var policyReport: [String: Any] = ["file": policyPath]
                do {
                    let p = try PolicyLoader.load(file: policyPath)
                    policyReport["agents"] = p.agents.count
                    policyReport["tenants"] = p.tenants.count
                    if !json { print("\(policyPath): OK (\(p.agents.count) agents)") }
                    policyReport["errors"] = [[String: Any]]()
                } catch {
                    policyOK = false
                    issues += error.issues
                    policyReport["errors"] = error.issues.map(Self.object)
                }
                policyReport["ok"] = policyOK
                report["policy"] = policyReport
            }

            // `ok` is the whole answer (the exit status); each file's own errors are listed with it.
            report["ok"] = issues.isEmpty
            if json {
                printJSON(report)
            } else {
                for issue in issues { FileHandle.standardError.write(Data("\(issue)\n".utf8)) }
            }
            if !issues.isEmpty { throw ExitCode(1) }
        }

        static func object(_ issue: ConfigIssue) -> [String: Any] {
            ["file": issue.file, "line": issue.line, "column": issue.column, "message": issue.message]
        }
    }
}
