import Foundation
import GRDB
import Governance
import Logging
import Synchronization

/// What must outlive a restart, in an embedded SQLite database under the state directory
/// (`$STATE_DIRECTORY`, /var/lib/breakwater under systemd): budget usage per agent and tenant and window, open
/// circuit breakers with their reopen time, and calls waiting for an approval.
///
/// Writes stay off the request path: budget and breaker changes are queued and written in one transaction at most
/// once a second by a background queue, so a crash loses at most the last second of them. A new pending approval
/// is written at once, also on that queue (SQLite may wait up to its busy timeout for a reader of the file), and
/// its caller is told "pending" only once it has committed.
final class StateStore: Sendable {
    /// An open breaker as stored: when it lets probes in, in Unix seconds.
    struct BreakerRow: Sendable, Equatable {
        var provider: String
        var model: String
        var reopensAt: Double
    }

    private struct Pending {
        var budgets: [BudgetSnapshot.Entry] = []
        /// By "provider/model"; nil deletes the row (the breaker closed).
        var breakers: [String: BreakerRow?] = [:]
        var approvalsGone: Set<String> = []
        var isEmpty: Bool { budgets.isEmpty && breakers.isEmpty && approvalsGone.isEmpty }
    }

    private let db: DatabaseQueue
    private let pending = Mutex(Pending())
    private let flushing = Mutex(false)
    private let logger: Logger
    private let queue = DispatchQueue(label: "breakwater.state-store")

    static let flushInterval: DispatchTimeInterval = .seconds(1)

    init(directory: String, logger: Logger) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var configuration = Configuration()
        // Someone reading the file (sqlite3, a backup) must not make a write fail at once.
        configuration.busyMode = .timeout(5)
        db = try DatabaseQueue(path: directory + "/breakwater.sqlite", configuration: configuration)
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
        migrator.registerMigration("v2-breakers-approvals") { db in
            try db.create(table: "open_breakers") { t in
                t.primaryKey("target", .text)
                t.column("provider", .text).notNull()
                t.column("model", .text).notNull()
                t.column("reopens_at", .double).notNull()
            }
            try db.create(table: "pending_approvals") { t in
                t.primaryKey("id", .text)
                t.column("request_id", .text)
                t.column("snapshot", .blob).notNull()
            }
        }
        try migrator.migrate(db)
    }

    func logError(_ message: String, _ error: any Error) {
        logger.error("\(message)", metadata: ["error": "\(error)"])
    }

    func loadBreakers() throws -> [BreakerRow] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT provider, model, reopens_at FROM open_breakers").map {
                BreakerRow(provider: $0["provider"], model: $0["model"], reopensAt: $0["reopens_at"])
            }
        }
    }

    /// Queues a breaker's new state for the next flush: a row while it is open, none once it closed.
    func saveBreaker(target: String, _ row: BreakerRow?) {
        enqueue { $0.breakers[target] = .some(row) }
    }

    /// Pending approvals with the request id of the call waiting on each.
    func loadApprovals() throws -> [(snapshot: ApprovalSnapshot, requestID: String?)] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT request_id, snapshot FROM pending_approvals").compactMap { row in
                let data: Data = row["snapshot"]
                guard let s = try? JSONDecoder().decode(ApprovalSnapshot.self, from: data) else { return nil }
                return (s, row["request_id"])
            }
        }
    }

    /// Writes a new pending approval on the store's queue, never on the caller's thread, then calls `done` there
    /// (true: committed; false: the write failed, logged, and the approval lives in memory only).
    func saveApproval(_ snapshot: ApprovalSnapshot, requestID: String?, done: @escaping @Sendable (Bool) -> Void) {
        queue.async { [self] in
            do {
                let data = try JSONEncoder().encode(snapshot)
                try db.write { db in
                    try db.execute(sql: "INSERT OR REPLACE INTO pending_approvals (id, request_id, snapshot) "
                                       + "VALUES (?, ?, ?)", arguments: [snapshot.id, requestID, data])
                }
                done(true)
            } catch {
                // It still works in memory; only a restart would lose it.
                logError("could not write a pending approval to the state store", error)
                done(false)
            }
        }
    }

    /// Queues the removal of an approval that was decided, expired or withdrawn. Queued from the store's queue,
    /// behind the approval's own write (which may still be waiting), so a removal never overtakes its insert.
    func removeApproval(_ id: String) {
        queue.async { [self] in enqueue { $0.approvalsGone.insert(id) } }
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
        enqueue { $0.budgets.append(contentsOf: entries) }
    }

    private func enqueue(_ change: (inout Pending) -> Void) {
        pending.withLock { change(&$0) }
        let start = flushing.withLock { busy -> Bool in
            if busy { return false }
            busy = true
            return true
        }
        if start {
            queue.asyncAfter(deadline: .now() + Self.flushInterval) { [self] in write() }
        }
    }

    /// Writes what is queued now (at shutdown), after any write already under way: writes never overlap or
    /// reorder.
    func flush() {
        queue.sync { write() }
    }

    /// On the store's queue: one transaction with everything queued. If it fails, the changes go back in the
    /// queue (behind any newer change to the same row) for the next flush.
    private func write() {
        let changes = pending.withLock { p -> Pending in
            defer { p = Pending() }
            return p
        }
        flushing.withLock { $0 = false }
        guard !changes.isEmpty else { return }
        // Later rows for the same period carry newer totals: keep the last.
        var latest: [String: BudgetSnapshot.Entry] = [:]
        for r in changes.budgets { latest[[r.subject, r.name, r.window, r.period].joined(separator: "\u{1F}")] = r }
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
                for (target, row) in changes.breakers {
                    if let row {
                        try db.execute(sql: """
                            INSERT OR REPLACE INTO open_breakers (target, provider, model, reopens_at)
                            VALUES (?, ?, ?, ?)
                            """, arguments: [target, row.provider, row.model, row.reopensAt])
                    } else {
                        try db.execute(sql: "DELETE FROM open_breakers WHERE target = ?", arguments: [target])
                    }
                }
                for id in changes.approvalsGone {
                    try db.execute(sql: "DELETE FROM pending_approvals WHERE id = ?", arguments: [id])
                }
            }
        } catch {
            logger.error("could not write to the state store; will try again", metadata: ["error": "\(error)"])
            enqueue { newer in
                var merged = changes
                merged.budgets.append(contentsOf: newer.budgets)  // later rows win when written
                merged.breakers.merge(newer.breakers) { _, new in new }
                merged.approvalsGone.formUnion(newer.approvalsGone)
                newer = merged
            }
        }
    }
}
