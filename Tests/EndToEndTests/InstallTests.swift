import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The repository this test file is in: Tests/EndToEndTests/InstallTests.swift, three levels down.
let repoRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// `scripts/install.sh` into a DESTDIR: every file where the README says, with its mode; a user's config survives a
/// second run; the installed units pass `systemd-analyze verify`; `scripts/uninstall.sh` takes it away again.
@Suite(.serialized, .timeLimit(.minutes(2))) struct InstallTests {
    func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
             in dir: String) async throws -> (Int32?, String) {
        let p = try ChildProcess(executable, arguments, environment: environment,
                                 logPath: dir + "/run-\(UUID().uuidString).log")
        return (try await p.waitForExit(timeout: .seconds(60)), p.output)
    }

    func install(into destdir: String, prefix: String?, logs: String) async throws -> (Int32?, String) {
        var environment = ["DESTDIR": destdir]
        if let prefix { environment["PREFIX"] = prefix }
        return try await run(repoRoot + "/scripts/install.sh", ["--no-build", "--bin-dir", binDir],
                             environment: environment, in: logs)
    }

    func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
    }

    func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    @Test func installIntoADestdir() async throws {
        let logs = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: logs) }
        let root = logs + "/root"
        let prefix = "/opt/breakwater"
        let (status, out) = try await install(into: root, prefix: prefix, logs: logs)
        #expect(status == 0, "\(out)")

        let expected: [(String, Int)] = [
            ("\(prefix)/bin/breakwaterd", 0o755),
            ("\(prefix)/bin/breakwater", 0o755),
            ("/etc/systemd/system/breakwater.socket", 0o644),
            ("/etc/systemd/system/breakwater-http.socket", 0o644),
            ("/etc/systemd/system/breakwater.service", 0o644),
            ("/usr/lib/systemd/catalog/breakwater.catalog", 0o644),
            ("/usr/lib/sysusers.d/breakwater.conf", 0o644),
            ("/etc/breakwater", 0o755),
            ("/etc/breakwater/breakwater.yaml", 0o644),
            ("/etc/breakwater/policy.example.yaml", 0o644),
            ("/etc/breakwater/credentials", 0o700),
            // Empty, so LoadCredential= does not fail the service before the admin puts the key there.
            ("/etc/breakwater/credentials/openai_api_key", 0o600),
            ("\(prefix)/share/doc/breakwater/README.md", 0o644),
        ]
        for (path, wanted) in expected {
            let found = mode(root + path).map { String($0, radix: 8) } ?? "missing"
            #expect(mode(root + path) == wanted, "\(path): mode \(found)")
        }
        #expect(read(root + "/etc/breakwater/breakwater.yaml") == read(repoRoot + "/breakwater.example.yaml"))
        #expect(read(root + "/etc/breakwater/policy.example.yaml") == read(repoRoot + "/policy.example.yaml"))
        #expect(read(root + "/usr/lib/sysusers.d/breakwater.conf").contains("\ng breakwater -\n"))
        #expect(FileManager.default.contentsEqual(atPath: root + prefix + "/bin/breakwaterd",
                                                  andPath: binDir + "/breakwaterd"))

        // The units run the installed daemon, not /usr/local's.
        let service = read(root + "/etc/systemd/system/breakwater.service")
        let execStart = "ExecStart=\(prefix)/bin/breakwaterd --config ${CONFIGURATION_DIRECTORY}/breakwater.yaml"
        #expect(service.split(separator: "\n").contains { $0 == execStart }, "\(service)")
        #expect(!service.contains("/usr/local") && !read(root + "/etc/systemd/system/breakwater.socket")
            .contains("/usr/local") && !read(root + "/etc/systemd/system/breakwater-http.socket").contains("/usr/local"))

        // The installed CLI accepts the installed config, and the installed policy example.
        let (checked, check) = try await run(root + prefix + "/bin/breakwater",
                                             ["config", "check", root + "/etc/breakwater/breakwater.yaml",
                                              "--policy", root + "/etc/breakwater/policy.example.yaml"], in: logs)
        #expect(checked == 0 && check.contains("OK"), "\(check)")

        // systemd accepts the units. verify needs ExecStart='s binary to exist: check copies that point at the
        // staged one (the pattern scripts/test.sh uses).
        let verify = logs + "/verify"
        try FileManager.default.createDirectory(atPath: verify, withIntermediateDirectories: true)
        for socket in ["breakwater.socket", "breakwater-http.socket"] {
            try FileManager.default.copyItem(atPath: root + "/etc/systemd/system/" + socket,
                                             toPath: verify + "/" + socket)
        }
        try service.replacingOccurrences(of: "ExecStart=\(prefix)/", with: "ExecStart=\(root + prefix)/")
            .write(toFile: verify + "/breakwater.service", atomically: true, encoding: .utf8)
        let (verified, verifyOut) = try await run("/usr/bin/systemd-analyze",
                                                  ["verify", verify + "/breakwater.socket",
                                                   verify + "/breakwater-http.socket",
                                                   verify + "/breakwater.service"], in: logs)
        #expect(verified == 0, "\(verifyOut)")
        // And systemd-sysusers makes the socket's group from the installed file.
        let (made, madeOut) = try await run("/usr/bin/systemd-sysusers", ["--root=" + root], in: logs)
        #expect(made == 0 && read(root + "/etc/group").contains("breakwater:"), "\(madeOut)")

        #expect(read(root + "/etc/breakwater/credentials/openai_api_key").isEmpty)

        // A second run keeps the user's config and key.
        let mine = "# my own config\n" + read(root + "/etc/breakwater/breakwater.yaml")
        try mine.write(toFile: root + "/etc/breakwater/breakwater.yaml", atomically: true, encoding: .utf8)
        try "sk-installed-key".write(toFile: root + "/etc/breakwater/credentials/openai_api_key", atomically: true,
                                     encoding: .utf8)
        let (again, againOut) = try await install(into: root, prefix: prefix, logs: logs)
        #expect(again == 0, "\(againOut)")
        #expect(read(root + "/etc/breakwater/breakwater.yaml") == mine)
        #expect(read(root + "/etc/breakwater/credentials/openai_api_key") == "sk-installed-key")
        #expect(againOut.contains("breakwater.yaml exists: kept"), "\(againOut)")

        // Uninstall removes the program and its units, and keeps the config and the credentials directory.
        let (removed, removedOut) = try await run(repoRoot + "/scripts/uninstall.sh", [],
                                                  environment: ["DESTDIR": root, "PREFIX": prefix], in: logs)
        #expect(removed == 0, "\(removedOut)")
        for path in ["\(prefix)/bin/breakwaterd", "\(prefix)/bin/breakwater", "/etc/systemd/system/breakwater.service",
                     "/etc/systemd/system/breakwater.socket", "/etc/systemd/system/breakwater-http.socket",
                     "/usr/lib/systemd/catalog/breakwater.catalog"] {
            #expect(!FileManager.default.fileExists(atPath: root + path), "\(path) is still there")
        }
        #expect(read(root + "/etc/breakwater/breakwater.yaml") == mine)
        #expect(mode(root + "/etc/breakwater/credentials") == 0o700)
    }

    /// With the default PREFIX the units are installed exactly as they are in the repository.
    @Test func defaultPrefixKeepsTheUnitsAsWritten() async throws {
        let logs = makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: logs) }
        let root = logs + "/root"
        let (status, out) = try await install(into: root, prefix: nil, logs: logs)
        #expect(status == 0, "\(out)")
        #expect(FileManager.default.isExecutableFile(atPath: root + "/usr/local/bin/breakwaterd"))
        for unit in ["breakwater.socket", "breakwater-http.socket", "breakwater.service"] {
            #expect(read(root + "/etc/systemd/system/" + unit) == read(repoRoot + "/systemd/" + unit), "\(unit)")
        }
    }
}
