//! The Lua scripts Redis runs atomically for the replicas: admitting an attempt (the epoch,
//! the shared pause and its probe lock, the send budget), settling it, counting, and adding
//! sends back.
//!
//! A budget is a sorted set per account: one member per attempt or send, scored by its time
//! (Unix milliseconds), named `<kind>:<replica>:<nonce>:<recipients>`, so the count is in the
//! name and the same send added twice is one member. Reservations (`r:`) count like sends
//! until settled into a send (`s:`) of the recipients actually accepted, or dropped when none
//! were. Members older than a day are removed; the windows are the last 60 s and 24 h, as in
//! the local budget.
//!
//! Beside each set, a counter holds the sum of its members' recipients, so that admitting an
//! attempt costs what left the window since the last one (and a scan of the last minute when
//! there is a per-minute limit), not a scan of the whole day: with a scan, a day of a few
//! thousand sends made every admission a millisecond or more of Redis's single thread. The
//! counter is changed with the set in the same script, and rebuilt from the set when it is
//! missing (evicted) or went negative.

/// Functions every budget script starts with: a member's recipients, and the day's count.
macro_rules! prelude {
    () => {
        r#"
local DAY = 86400000
local TTL = DAY + 60000
local function count(member) return tonumber(string.match(member, ':(%d+)$')) or 0 end
local function day_count(budget, total, now)
  local cut = now - DAY
  local n = tonumber(redis.call('GET', total))
  if redis.call('EXISTS', budget) == 0 then n = 0 end
  if n then
    local old = redis.call('ZRANGEBYSCORE', budget, '-inf', cut)
    for _, m in ipairs(old) do n = n - count(m) end
  end
  redis.call('ZREMRANGEBYSCORE', budget, '-inf', cut)
  if not n or n < 0 then
    n = 0
    for _, m in ipairs(redis.call('ZRANGE', budget, 0, -1)) do n = n + count(m) end
  end
  redis.call('SET', total, n, 'PX', TTL)
  return n
end
local function add_to_total(total, n)
  if n ~= 0 and redis.call('EXISTS', total) == 1 then redis.call('INCRBY', total, n) end
end
"#
    };
}

/// Admits one attempt of `cost` recipients.
///
/// KEYS: budget, pause, probe lock, epoch, reseeded set, budget counter. ARGV: now (ms), per-minute limit,
/// per-day limit (-1: none), cost, reservation member, replica, probe lock TTL (ms), a new
/// epoch id, grace (ms), replicas.
///
/// Answers `{"reseed", epoch}` (this replica has not added its own sends since Redis started
/// afresh), `{"wait", epoch, until, why, minute, day}` (`why`: `epoch` while the other
/// replicas reseed, `budget` when spent), `{"paused", epoch, pause}`, `{"probing", epoch,
/// pause, until, holder}` (another replica probes the pause), or `{"go", epoch, probe,
/// minute, day}` (reserved; `probe` is 1 when this attempt probes a pause).
pub const ADMIT: &str = concat!(
    prelude!(),
    r#"
local now = tonumber(ARGV[1])
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[8] .. ':' .. ARGV[1]
  redis.call('SET', KEYS[4], epoch)
  redis.call('DEL', KEYS[5])
end
if redis.call('SISMEMBER', KEYS[5], ARGV[6]) == 0 then
  return {'reseed', epoch}
end
local born = tonumber(string.match(epoch, ':(%d+)$')) or 0
local grace_end = born + tonumber(ARGV[9])
if redis.call('SCARD', KEYS[5]) < tonumber(ARGV[10]) and now < grace_end then
  return {'wait', epoch, tostring(grace_end), 'epoch', '0', '0'}
end
local probe = 0
local pause = redis.call('GET', KEYS[2])
if pause then
  local p = cjson.decode(pause)
  if now < tonumber(p['until']) then
    return {'paused', epoch, pause}
  end
  if redis.call('SET', KEYS[3], ARGV[6], 'NX', 'PX', ARGV[7]) then
    probe = 1
  else
    local ttl = redis.call('PTTL', KEYS[3])
    if ttl < 0 then ttl = 0 end
    return {'probing', epoch, pause, tostring(now + ttl), redis.call('GET', KEYS[3]) or ''}
  end
end
local per_minute = tonumber(ARGV[2])
local per_day = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local minute, day = 0, 0
if per_minute >= 0 or per_day >= 0 then
  day = day_count(KEYS[1], KEYS[6], now)
  local recent = {}
  if per_minute >= 0 then
    recent = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - 60000), '+inf', 'WITHSCORES')
    for i = 1, #recent, 2 do minute = minute + count(recent[i]) end
  end
  -- When enough of `entries` (oldest first, within the window) have left it for `cost` more
  -- (a message larger than the limit waits for an empty window).
  local function free_at(limit, total, window, entries)
    local over = total + math.min(cost, limit) - limit
    if over <= 0 then return 0 end
    for i = 1, #entries, 2 do
      over = over - count(entries[i])
      if over <= 0 then return tonumber(entries[i + 1]) + window end
    end
    return now + window
  end
  local wait_until = 0
  if per_day >= 0 and day + math.min(cost, per_day) > per_day then
    -- Spent: only now is the whole day read, to say when it has room again.
    local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    wait_until = free_at(per_day, day, DAY, all)
  end
  if per_minute >= 0 then
    wait_until = math.max(wait_until, free_at(per_minute, minute, 60000, recent))
  end
  if wait_until > 0 then
    if probe == 1 then redis.call('DEL', KEYS[3]) end
    return {'wait', epoch, tostring(wait_until), 'budget', tostring(minute), tostring(day)}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('INCRBY', KEYS[6], cost)
  redis.call('PEXPIRE', KEYS[1], TTL)
  redis.call('PEXPIRE', KEYS[6], TTL)
end
return {'go', epoch, tostring(probe), tostring(minute + cost), tostring(day + cost)}
"#
);

/// Settles a reservation: it becomes a send of the recipients accepted (at the reservation's
/// time), or goes when none were.
///
/// KEYS: budget, budget counter. ARGV: reservation member, send member, recipients accepted,
/// now (ms).
pub const SETTLE: &str = concat!(
    prelude!(),
    r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local delta = 0
if score then
  redis.call('ZREM', KEYS[1], ARGV[1])
  delta = delta - count(ARGV[1])
end
if tonumber(ARGV[3]) > 0 then
  if redis.call('ZADD', KEYS[1], 'NX', score or ARGV[4], ARGV[2]) == 1 then
    delta = delta + count(ARGV[2])
  end
  redis.call('PEXPIRE', KEYS[1], TTL)
end
add_to_total(KEYS[2], delta)
return 1
"#
);

/// The account's shared counts: `{minute, day}`.
///
/// KEYS: budget, budget counter. ARGV: now (ms).
pub const COUNT: &str = concat!(
    prelude!(),
    r#"
local now = tonumber(ARGV[1])
local day = day_count(KEYS[1], KEYS[2], now)
local minute = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - 60000), '+inf')) do
  minute = minute + count(m)
end
return {minute, day}
"#
);

/// Adds sends this replica made while Redis could not count them, or before Redis lost its
/// data; one already there (the same member) is not counted twice.
///
/// KEYS: budget, budget counter. ARGV: now (ms), then pairs of time (ms) and member. Answers
/// how many were added.
pub const ADD: &str = concat!(
    prelude!(),
    r#"
local now = tonumber(ARGV[1])
local added, n = 0, 0
for i = 2, #ARGV - 1, 2 do
  if tonumber(ARGV[i]) > now - DAY
    and redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
    n = n + count(ARGV[i + 1])
  end
end
if added > 0 then redis.call('PEXPIRE', KEYS[1], TTL) end
add_to_total(KEYS[2], n)
return added
"#
);

/// The heartbeat's look at the epoch: starts one when Redis holds none (as `ADMIT` does), and
/// says whether this replica has added its sends back under it.
///
/// KEYS: epoch, reseeded set. ARGV: a new epoch id (`<nonce>:<now ms>`), replica. Answers
/// `{epoch, 1 or 0}`.
pub const EPOCH: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2])
end
return {epoch, redis.call('SISMEMBER', KEYS[2], ARGV[2])}
"#;
