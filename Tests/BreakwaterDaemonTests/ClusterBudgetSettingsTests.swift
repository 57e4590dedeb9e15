import Config
import Foundation
import Governance
import Testing

@testable import BreakwaterDaemon

/// A policy whose budgets live in the cluster store needs the store: the daemon refuses to start (and a reload is
/// refused) without a `cluster:` section, naming the budgets.
@Suite struct ClusterBudgetSettingsTests {
    @Test func clusterBudgetsNeedAClusterSection() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bw-cb-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let policy = dir.appendingPathComponent("policy.yaml").path
        try """
            agents:
              a:
                scopes: {actions: ["*"], routes: ["*"], models: ["*"]}
                relationships: [{agent_to_tenant: acme}]
            tenants:
              acme:
                budgets: {scope: cluster, daily: {tokens: 100}}
            """.write(toFile: policy, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("breakwater.yaml").path
        try "routes: {}\n".write(toFile: config, atomically: true, encoding: .utf8)
        do {
            _ = try DaemonSettings.Sources(configPath: config, policyOverride: policy).load()
            Issue.record("a cluster budget without cluster: was accepted")
        } catch {
            #expect(error.issues.first?.message.contains("tenants.acme.budgets has scope cluster") == true,
                    "\(error.issues)")
        }
        try "cluster: {redis: \"unix:///run/redis.sock\"}\nroutes: {}\n".write(toFile: config, atomically: true,
                                                                           encoding: .utf8)
        let settings = try DaemonSettings.Sources(configPath: config, policyOverride: policy).load()
        #expect(settings.policy?.clusterBudgets == ["tenants.acme.budgets"])
    }
}
