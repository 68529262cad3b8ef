//! The Lua scripts Redis runs atomically for the replicas: admitting an attempt (the epoch,
//! the shared pause and its probe lock, the send budget) and settling it.
//!
//! A budget is a sorted set per account: one member per attempt or send, scored by its time
//! (Unix milliseconds), named `<kind>:<replica>:<nonce>:<recipients>`, so the count is in the
//! name and the same send added twice is one member. Reservations (`r:`) count like sends
//! until settled into a send (`s:`) of the recipients actually accepted, or dropped when none
//! were. Members older than a day are removed; the windows are the last 60 s and 24 h, as in
//! the local budget.

/// Admits one attempt of `cost` recipients.
///
/// KEYS: budget, pause, probe lock, epoch, reseeded set. ARGV: now (ms), per-minute limit,
/// per-day limit (-1: none), cost, reservation member, replica, probe lock TTL (ms), a new
/// epoch id, grace (ms), replicas.
///
/// Answers `{"reseed", epoch}` (this replica has not added its own sends since Redis started
/// afresh), `{"wait", epoch, until, why, minute, day}` (`why`: `epoch` while the other
/// replicas reseed, `budget` when spent), `{"paused", epoch, pause}`, `{"probing", epoch,
/// pause, until, holder}` (another replica probes the pause), or `{"go", epoch, probe,
/// minute, day}` (reserved; `probe` is 1 when this attempt probes a pause).
pub const ADMIT: &str = r#"
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
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
  local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  local function count(i) return tonumber(string.match(entries[i], ':(%d+)$')) or 0 end
  for i = 1, #entries, 2 do
    day = day + count(i)
    if tonumber(entries[i + 1]) > now - 60000 then minute = minute + count(i) end
  end
  -- When enough sends have left the window for `cost` more (a message larger than the
  -- limit waits for an empty window).
  local function free_at(limit, total, window)
    local over = total + math.min(cost, limit) - limit
    if over <= 0 then return 0 end
    for i = 1, #entries, 2 do
      local at = tonumber(entries[i + 1])
      if at > now - window then
        over = over - count(i)
        if over <= 0 then return at + window end
      end
    end
    return now + window
  end
  local wait_until = 0
  if per_day >= 0 then wait_until = math.max(wait_until, free_at(per_day, day, 86400000)) end
  if per_minute >= 0 then wait_until = math.max(wait_until, free_at(per_minute, minute, 60000)) end
  if wait_until > 0 then
    if probe == 1 then redis.call('DEL', KEYS[3]) end
    return {'wait', epoch, tostring(wait_until), 'budget', tostring(minute), tostring(day)}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], 86400000 + 60000)
end
return {'go', epoch, tostring(probe), tostring(minute + cost), tostring(day + cost)}
"#;

/// Settles a reservation: it becomes a send of the recipients accepted (at the reservation's
/// time), or goes when none were.
///
/// KEYS: budget. ARGV: reservation member, send member, recipients accepted, now (ms).
pub const SETTLE: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score then redis.call('ZREM', KEYS[1], ARGV[1]) end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[1], score or ARGV[4], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 86400000 + 60000)
end
return 1
"#;

/// The account's shared counts: `{minute, day}`.
///
/// KEYS: budget. ARGV: now (ms).
pub const COUNT: &str = r#"
local now = tonumber(ARGV[1])
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], now - 86400000, '+inf', 'WITHSCORES')
local minute, day = 0, 0
for i = 1, #entries, 2 do
  local n = tonumber(string.match(entries[i], ':(%d+)$')) or 0
  day = day + n
  if tonumber(entries[i + 1]) > now - 60000 then minute = minute + n end
end
return {minute, day}
"#;

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
