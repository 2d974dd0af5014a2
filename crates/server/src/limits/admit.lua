-- Admits one request under every quota scope that applies, or refuses it, atomically: no
-- other admission on any replica runs between the checks and the reservation.
--
-- KEYS, five per scope: the requests of the last minute (a sorted set of reservation ids
-- by time), their tokens (members "id:tokens") and the running sum of those tokens (kept
-- so a check costs the entries that expire, not the whole window), this UTC day's tokens,
-- this month's spend.
-- ARGV: reservation id, tokens, seconds until the day ends, seconds until the month ends,
-- then six per scope: requests per minute, tokens per minute, tokens per day, monthly
-- budget (each '' when the quota sets none), and the day's tokens and month's spend from
-- the usage store ('' when not read yet).
-- Returns {'ok'}, {'seed'} (a counter is missing: read the store and call again), or a
-- refusal: {kind, scope index, retry-after seconds, detail}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local id, tokens = ARGV[1], tonumber(ARGV[2])
local day_ttl, month_ttl = ARGV[3], ARGV[4]
local scopes = #KEYS / 5

local function retry_after(key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] == nil then return '1' end
  return tostring(math.max(1, math.ceil((tonumber(oldest[2]) + 60000 - now) / 1000)))
end

local function counter(key, seed, ttl)
  local value = redis.call('GET', key)
  if value then return tonumber(value) end
  if seed == '' then return nil end
  redis.call('SET', key, seed, 'EX', ttl, 'NX')
  return tonumber(redis.call('GET', key))
end

-- Drops the token log's entries older than the window from it and from its sum.
local function expire_tokens(token_log, sum)
  local gone = redis.call('ZRANGEBYSCORE', token_log, '-inf', now - 60000)
  if #gone == 0 then return end
  local tokens_gone = 0
  for _, member in ipairs(gone) do
    tokens_gone = tokens_gone + tonumber(string.match(member, ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', token_log, '-inf', now - 60000)
  redis.call('DECRBY', sum, tokens_gone)
end

for s = 0, scopes - 1 do
  local requests, token_log, sum = KEYS[5*s+1], KEYS[5*s+2], KEYS[5*s+3]
  local day, month = KEYS[5*s+4], KEYS[5*s+5]
  local rpm, tpm, tpd, budget = ARGV[5+6*s], ARGV[6+6*s], ARGV[7+6*s], ARGV[8+6*s]
  local day_seed, month_seed = ARGV[9+6*s], ARGV[10+6*s]
  redis.call('ZREMRANGEBYSCORE', requests, '-inf', now - 60000)
  expire_tokens(token_log, sum)
  if rpm ~= '' and redis.call('ZCARD', requests) >= tonumber(rpm) then
    return {'requests', tostring(s), retry_after(requests), '0'}
  end
  if tpm ~= '' then
    if tokens > tonumber(tpm) then return {'too_large', tostring(s), '0', '0'} end
    local used = tonumber(redis.call('GET', sum) or '0')
    if used + tokens > tonumber(tpm) then
      return {'tokens', tostring(s), retry_after(token_log), tostring(used)}
    end
  end
  if tpd ~= '' then
    local used = counter(day, day_seed, day_ttl)
    if used == nil then return {'seed'} end
    if used + tokens > tonumber(tpd) then return {'day', tostring(s), day_ttl, tostring(used)} end
  end
  if budget ~= '' then
    local spent = counter(month, month_seed, month_ttl)
    if spent == nil then return {'seed'} end
    if spent >= tonumber(budget) then
      return {'budget', tostring(s), day_ttl, redis.call('GET', month)}
    end
  end
end

for s = 0, scopes - 1 do
  local requests, token_log, sum, day = KEYS[5*s+1], KEYS[5*s+2], KEYS[5*s+3], KEYS[5*s+4]
  redis.call('ZADD', requests, now, id)
  redis.call('ZADD', token_log, now, id .. ':' .. tokens)
  redis.call('INCRBY', sum, tokens)
  -- The window's keys live as long as their newest entry matters.
  redis.call('PEXPIRE', requests, 61000)
  redis.call('PEXPIRE', token_log, 61000)
  redis.call('PEXPIRE', sum, 61000)
  if ARGV[7+6*s] ~= '' then redis.call('INCRBY', day, tokens) end
end
return {'ok'}
