"""The shared limiter's Lua scripts: GCRA for RPM and TPM together, settlements and pauses.

Each runs in one round trip on Redis's clock (``TIME``); `SharedProviderLimiter` (`_limits`)
calls them and says what their results mean for a replica.
"""

from __future__ import annotations

from typing import Final

from ._scripts import LuaScript

__all__ = ["PAUSE", "RESERVE", "SETTLE"]

# Every script reads the server's clock, in microseconds, and stores a time with a time to live
# that ends when that time passes (an absent TAT is a full burst; an absent pause, none).
# settle(): a negative delta refunds (the TAT never goes below now: capacity is capped at a full
# burst), a positive one charges (the TAT may run ahead: later callers wait for the debt).
_PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function keep_until(key, at)
  if at > now then
    redis.call('SET', key, string.format('%.17g', at), 'PX', math.ceil((at - now) / 1000) + 1)
  else
    redis.call('DEL', key)
  end
end
local function read(key) return tonumber(redis.call('GET', key) or '0') end
local function settle(key, interval, delta)
  if interval > 0 and delta < 0 then
    keep_until(key, math.max(read(key) + delta * interval, now))
  elseif interval > 0 and delta > 0 then
    keep_until(key, math.max(read(key), now) + delta * interval)
  end
end
"""

# KEYS: rpm TAT, tpm TAT, pause, epoch. ARGV: rpm interval, rpm tolerance, tpm interval, tpm
# tolerance (microseconds; interval 0 = unlimited), tokens, max wait (microseconds, -1 =
# unbounded), requests owed, tokens owed, the epoch this replica last saw ('' = none), the
# window within which a new epoch may hide a loss (microseconds).
# Returns {admitted (1/0), wait in µs, pause left in µs, epoch}. Admitted: both TATs moved as if
# the units were taken after the wait, exactly what the local limiter does after sleeping it.
RESERVE: Final = LuaScript(
    _PRELUDE
    + """
local known, epoch, lost = ARGV[9], redis.call('GET', KEYS[4]), false
local stamp = string.format('%.0f', now)
if not epoch then
  lost = known ~= ''
  epoch = (lost and 'lost:' or 'new:') .. stamp
  redis.call('SET', KEYS[4], epoch)
elseif known ~= '' and epoch ~= known and string.sub(epoch, 1, 4) == 'new:'
    and now - tonumber(string.sub(epoch, 5)) < tonumber(ARGV[10]) then
  lost, epoch = true, 'lost:' .. stamp
  redis.call('SET', KEYS[4], epoch)
end
for i = 1, 2 do
  local interval = tonumber(ARGV[2 * i - 1])
  if lost and interval > 0 then
    keep_until(KEYS[i], math.max(read(KEYS[i]), now + tonumber(ARGV[2 * i])))
  elseif epoch == known then
    settle(KEYS[i], interval, tonumber(ARGV[6 + i]))
  end
end
local paused = read(KEYS[3])
local amounts = {1, tonumber(ARGV[5])}
local wait, tats = math.max(paused - now, 0), {}
for i = 1, 2 do
  local interval, tolerance = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if interval > 0 then
    tats[i] = read(KEYS[i])
    local start = math.max(tats[i], now, paused) + amounts[i] * interval - tolerance
    wait = math.max(wait, start - now)
  end
end
local bound = tonumber(ARGV[6])
local pause_left = math.ceil(math.max(paused - now, 0))
if bound >= 0 and wait > bound then
  return {0, math.ceil(wait), pause_left, epoch}
end
for i = 1, 2 do
  if tats[i] then
    keep_until(KEYS[i], math.max(tats[i], now + wait) + amounts[i] * tonumber(ARGV[2 * i - 1]))
  end
end
return {1, math.ceil(wait), pause_left, epoch}
"""
)

# KEYS: rpm TAT, tpm TAT, epoch. ARGV: rpm interval, tpm interval (µs), requests owed, tokens
# owed, the epoch they were reserved against. Returns 0, changing nothing, when that state was
# lost since.
SETTLE: Final = LuaScript(
    _PRELUDE
    + """
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return 0 end
for i = 1, 2 do settle(KEYS[i], tonumber(ARGV[i]), tonumber(ARGV[i + 2])) end
return 1
"""
)

# KEYS: pause. ARGV: pause length (µs). A shorter pause never cuts a longer one.
PAUSE: Final = LuaScript(
    _PRELUDE
    + """
local until_at = now + tonumber(ARGV[1])
if until_at > read(KEYS[1]) then keep_until(KEYS[1], until_at) end
return 1
"""
)
