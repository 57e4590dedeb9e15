import Foundation
import GRDB
import Governance
import Logging
import Synchronization

/// What must outlive a restart, in an embedded SQLite database under the state directory
/// (`$STATE_DIRECTORY`, /var/lib/breakwater under systemd): budget usage per agent and tenant and window.
///
/// Writes stay off the request path: settled rows are queued and written in one transaction at most once a
/// second by a background queue, so a crash loses at most the last second of budget usage.
final class StateStore: Sendable {
    private let db: DatabaseQueue
    private let pending = Mutex<[BudgetSnapshot.Entry]>([])
    private let flushing = Mutex(false)
    private let logger: Logger
    private let queue = DispatchQueue(label: "breakwater.state-store")

    static let flushInterval: DispatchTimeInterval = .seconds(1)

    init(directory: String, logger: Logger) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        db = try DatabaseQueue(path: directory + "/breakwater.sqlite")
        self.logger = logger
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-budget-usage") { db in
            try db.create(table: "budget_usage") { t in
                t.column("subject", .text).notNull()
                t.column("name", .text).notNull()
                t.column("window", .text).notNull()
                t.column("period", .text).notNull()
                t.column("tokens", .integer).notNull()
                t.column("micro_usd", .integer).notNull()
                t.primaryKey(["subject", "name", "window", "period"])
            }
        }
        try migrator.migrate(db)
    }

    /// Everything recorded, for the ledger at start-up.
    func loadBudgets() throws -> BudgetSnapshot {
        let entries = try db.read { db in
            try Row.fetchAll(db, sql: "SELECT subject, name, window, period, tokens, micro_usd FROM budget_usage")
                .map { row in
                    BudgetSnapshot.Entry(subject: row["subject"], name: row["name"], window: row["window"],
                                         period: row["period"], tokens: row["tokens"], microUSD: row["micro_usd"])
                }
        }
        return BudgetSnapshot(entries: entries)
    }

    /// Queues rows (each the new total of one budget period) for the next flush.
    func saveBudgets(_ entries: [BudgetSnapshot.Entry]) {
        guard !entries.isEmpty else { return }
        pending.withLock { $0.append(contentsOf: entries) }
        let start = flushing.withLock { busy -> Bool in
            if busy { return false }
            busy = true
            return true
        }
        if start {
            queue.asyncAfter(deadline: .now() + Self.flushInterval) { [self] in flush() }
        }
    }

    /// Writes what is queued now (also called at shutdown).
    func flush() {
        let rows = pending.withLock { p -> [BudgetSnapshot.Entry] in
            defer { p.removeAll() }
            return p
        }
        flushing.withLock { $0 = false }
        guard !rows.isEmpty else { return }
        // Later rows for the same period carry newer totals: keep the last.
        var latest: [String: BudgetSnapshot.Entry] = [:]
        for r in rows { latest[[r.subject, r.name, r.window, r.period].joined(separator: "\u{1F}")] = r }
        do {
            try db.write { db in
                for r in latest.values {
                    try db.execute(sql: """
                        INSERT INTO budget_usage (subject, name, window, period, tokens, micro_usd)
                        VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT(subject, name, window, period) DO UPDATE SET
                            tokens = excluded.tokens, micro_usd = excluded.micro_usd
                        """, arguments: [r.subject, r.name, r.window, r.period, r.tokens, r.microUSD])
                }
            }
        } catch {
            logger.error("could not write budget usage to the state store", metadata: ["error": "\(error)"])
        }
    }
}
