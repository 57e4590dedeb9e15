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
    /// Holds one call's worst case against every cluster budget that applies, all-or-nothing, so calls on
    /// different daemons cannot overshoot together. KEYS: per budget its hash (`ut` `um` used tokens and
    /// micro-dollars, `ht` `hm` held, `h:ID` = one hold's "tokens micro") and its holds' expiry set. ARGV: hold
    /// id, hold lifetime ms, tokens, micro-dollars, then per budget its token cap, cost cap (-1: none) and how long
    /// the store keeps it (ms). Holds past their lifetime (their daemon went away) are charged in full first:
    /// the call may have been answered, and a cap is never passed on a guess that it was not. Returns {1, per
    /// budget used + held tokens, micro-dollars} or {0, the budget's index (1-based), 1 tokens / 2 cost, used,
    /// held}.
    case budgetHold
    /// Replaces a hold with the real usage: KEYS as `budgetHold`, ARGV hold id, tokens, micro-dollars. A hold
    /// that is not there (settled already, or lapsed and charged) changes nothing, so a settle may be sent again.
    case budgetSettle
    /// Usage a daemon took on its own share while the store was unreachable: KEYS per budget its hash and the set
    /// of charges already taken; ARGV charge id, tokens, micro-dollars, then per budget how long the store keeps
    /// it (ms). Taken once per id.
    case budgetCharge

    /// Every script starts from the server's clock, in microseconds since the epoch.
    private static let clock = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

        """

    var source: String {
        switch self {
        case .budgetHold, .budgetSettle, .budgetCharge: Self.clock + Self.sweep + body
        default: Self.clock + body
        }
    }

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
        case .budgetHold: """
            local id, life, at, am = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
            local n = #KEYS / 2
            local totals = {1}
            for i = 1, n do
              local h, x = KEYS[2 * i - 1], KEYS[2 * i]
              sweep(h, x)
              local v = redis.call('HMGET', h, 'ut', 'um', 'ht', 'hm')
              local ut, um, ht, hm = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
              local lt, lm = tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i])
              if lt >= 0 and ut + ht + tonumber(at) > lt then return {0, i, 1, ut, ht} end
              if lm >= 0 and um + hm + tonumber(am) > lm then return {0, i, 2, um, hm} end
              totals[2 * i] = ut + ht + tonumber(at)
              totals[2 * i + 1] = um + hm + tonumber(am)
            end
            for i = 1, n do
              local h, x = KEYS[2 * i - 1], KEYS[2 * i]
              add(h, 'ht', at)
              add(h, 'hm', am)
              redis.call('HSET', h, 'h:' .. id, at .. ' ' .. am)
              redis.call('ZADD', x, math.floor(now / 1000) + life, id)
              redis.call('PEXPIRE', h, ARGV[4 + 3 * i])
              redis.call('PEXPIRE', x, ARGV[4 + 3 * i])
            end
            return totals
            """
        case .budgetSettle: """
            local id, ut, um = ARGV[1], ARGV[2], ARGV[3]
            local settled = 0
            for i = 1, #KEYS / 2 do
              local h, x = KEYS[2 * i - 1], KEYS[2 * i]
              if close(h, x, id, ut, um) then settled = settled + 1 end
              sweep(h, x)
            end
            return settled
            """
        case .budgetCharge: """
            local id, ut, um = ARGV[1], ARGV[2], ARGV[3]
            local ms = math.floor(now / 1000)
            local taken = 0
            for i = 1, #KEYS / 2 do
              local h, c = KEYS[2 * i - 1], KEYS[2 * i]
              if not redis.call('ZSCORE', c, id) then
                add(h, 'ut', ut)
                add(h, 'um', um)
                redis.call('ZADD', c, ms, id)
                taken = taken + 1
              end
              redis.call('ZREMRANGEBYSCORE', c, '-inf', ms - 86400000)
              redis.call('PEXPIRE', h, ARGV[3 + i])
              redis.call('PEXPIRE', c, ARGV[3 + i])
            end
            return taken
            """
        }
    }

    /// Adding to a budget's counts, and sweeping lapsed holds of budget `h` (expiry set `x`) into its usage.
    private static let sweep = """
        -- Whole numbers as strings, never through Lua's doubles; "-0" is not an integer to Redis.
        local function add(h, f, v) if v ~= '0' then redis.call('HINCRBY', h, f, v) end end
        local function sub(h, f, v) if v ~= '0' then redis.call('HINCRBY', h, f, '-' .. v) end end
        -- Replaces hold `id` of budget `h` (expiry set `x`) with usage `ut` `um` (the hold itself when nil);
        -- false when there is no such hold (settled already, or lapsed).
        local function close(h, x, id, ut, um)
          local v = redis.call('HGET', h, 'h:' .. id)
          if not v then return false end
          local ht, hm = string.match(v, '^(%d+) (%d+)$')
          sub(h, 'ht', ht)
          sub(h, 'hm', hm)
          add(h, 'ut', ut or ht)
          add(h, 'um', um or hm)
          redis.call('HDEL', h, 'h:' .. id)
          redis.call('ZREM', x, id)
          return true
        end
        -- Lapsed holds (their daemon went away) are charged in full.
        local function sweep(h, x)
          for _, id in ipairs(redis.call('ZRANGEBYSCORE', x, '-inf', math.floor(now / 1000))) do
            close(h, x, id, nil, nil)
            redis.call('ZREM', x, id)
          end
        end

        """

    /// The script's SHA-1, which `EVALSHA` names it by (SHA-1 because Redis does; nothing secret is hashed).
    var sha: String {
        hex(Insecure.SHA1.hash(data: Array(source.utf8)))
    }
}
