import Crypto

/// The Lua scripts the cluster store runs. Each is one atomic step on the Redis server with the server's clock
/// (`TIME`), so daemons whose clocks disagree still share one limit exactly, and no two daemons can both take the
/// last unit (one GET-then-SET would race). Times are microseconds since the epoch, as Lua doubles (exact to
/// well under a microsecond at today's epoch); they are written back with `%.3f`, since Lua's own `tostring`
/// keeps only 14 digits.
enum FleetScript: CaseIterable {
    /// A lease of a provider key's rate (GCRA, one theoretical arrival time per limit, as the local limiter):
    /// grants between `need` and `want` requests and tokens, all-or-nothing for `need`. When `need` does not fit
    /// now but will within `max wait`, it is granted for then: the next slot of the limit goes to whoever asked
    /// first, on any daemon (a queue across the fleet, as the local limiter's places are for one host), so
    /// daemons that all wait share the limit by how much they ask, not by who polls fastest. Otherwise nothing is
    /// granted and the answer says how long until `need` fits. Charges `debt` tokens first (an answer that used
    /// more than its reservation). KEYS[1]: the key's hash. ARGV: request interval, request tolerance, token
    /// interval, token tolerance (µs; an interval of 0 is no limit), need requests, need tokens, want requests,
    /// want tokens, debt tokens, TTL ms, max wait µs. Returns {requests granted, tokens granted, µs until the
    /// grant may be used (or, with nothing granted, until the need fits)}.
    case acquire
    /// Gives back an unused lease: ARGV request interval, token interval, requests, tokens.
    case giveBack
    /// The provider said how much is left (`x-ratelimit-remaining-*`): no more than that passes, host-wide.
    /// ARGV: request interval, request tolerance, token interval, token tolerance, requests left (-1: not said),
    /// tokens left (-1), TTL ms.
    case remaining
    /// The provider rate-limited the key without saying for how long: every daemon rests it. ARGV: µs, TTL ms.
    case rest
    /// A daemon says it is alive; returns how many are (seen within ARGV[2] ms). KEYS[1]: the set of daemons.
    case heartbeat

    /// Every script starts from the server's clock, in microseconds since the epoch.
    private static let clock = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

        """

    var source: String { Self.clock + body }

    private var body: String {
        switch self {
        case .acquire: """
            local ri, rtol, ti, ttol = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
            local nr, nt, wr, wt = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
            local h = redis.call('HMGET', KEYS[1], 'r', 't', 'rest')
            local tr = math.max(tonumber(h[1]) or 0, now)
            local tk = math.max(tonumber(h[2]) or 0, now)
            local rest = tonumber(h[3]) or 0
            if ti > 0 then tk = tk + tonumber(ARGV[9]) * ti end
            -- Units that fit now (negative while later slots are granted); nil: no limit.
            local function room(tat, i, tol)
              if i <= 0 then return nil end
              return math.floor((now + tol - tat) / i)
            end
            local ar, at = room(tr, ri, rtol), room(tk, ti, ttol)
            local wait = 0
            if ar and nr > 0 and ar < nr then wait = math.max(wait, tr + nr * ri - rtol - now) end
            if at and nt > 0 and at < nt then wait = math.max(wait, tk + nt * ti - ttol - now) end
            local gr, gt = 0, 0
            if rest > now then
              wait = math.max(wait, rest - now)
            elseif wait <= 0 then
              if ar then gr = math.max(0, math.min(wr, ar)) else gr = wr end
              if at then gt = math.max(0, math.min(wt, at)) else gt = wt end
              if ri > 0 then tr = tr + gr * ri end
              if ti > 0 then tk = tk + gt * ti end
            elseif wait <= tonumber(ARGV[11]) then
              gr, gt = nr, nt
              if ri > 0 then tr = tr + gr * ri end
              if ti > 0 then tk = tk + gt * ti end
            end
            redis.call('HSET', KEYS[1], 'r', string.format('%.3f', tr), 't', string.format('%.3f', tk))
            redis.call('PEXPIRE', KEYS[1], ARGV[10])
            return {gr, gt, math.ceil(wait)}
            """
        case .giveBack: """
            local ri, ti = tonumber(ARGV[1]), tonumber(ARGV[2])
            local h = redis.call('HMGET', KEYS[1], 'r', 't')
            if h[1] and ri > 0 then
              local tr = math.max(tonumber(h[1]) - tonumber(ARGV[3]) * ri, now)
              redis.call('HSET', KEYS[1], 'r', string.format('%.3f', tr))
            end
            if h[2] and ti > 0 then
              local tk = math.max(tonumber(h[2]) - tonumber(ARGV[4]) * ti, now)
              redis.call('HSET', KEYS[1], 't', string.format('%.3f', tk))
            end
            return 1
            """
        case .remaining: """
            local ri, rtol, ti, ttol = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
            local rr, rt = tonumber(ARGV[5]), tonumber(ARGV[6])
            local h = redis.call('HMGET', KEYS[1], 'r', 't')
            if ri > 0 and rr >= 0 then
              local tr = math.max(tonumber(h[1]) or 0, now + rtol - rr * ri)
              redis.call('HSET', KEYS[1], 'r', string.format('%.3f', tr))
            end
            if ti > 0 and rt >= 0 then
              local tk = math.max(tonumber(h[2]) or 0, now + ttol - rt * ti)
              redis.call('HSET', KEYS[1], 't', string.format('%.3f', tk))
            end
            redis.call('PEXPIRE', KEYS[1], ARGV[7])
            return 1
            """
        case .rest: """
            local rest = tonumber(redis.call('HGET', KEYS[1], 'rest')) or 0
            redis.call('HSET', KEYS[1], 'rest', string.format('%.3f', math.max(rest, now + tonumber(ARGV[1]))))
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
            return 1
            """
        case .heartbeat: """
            local ms = math.floor(now / 1000)
            redis.call('ZADD', KEYS[1], ms, ARGV[1])
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[2]))
            redis.call('PEXPIRE', KEYS[1], ARGV[2])
            return redis.call('ZCARD', KEYS[1])
            """
        }
    }

    /// The script's SHA-1, which `EVALSHA` names it by (SHA-1 because Redis does; nothing secret is hashed).
    var sha: String {
        hex(Insecure.SHA1.hash(data: Array(source.utf8)))
    }
}
