-- Settles a reservation at what the request really used, in every scope it was taken in.
--
-- KEYS, four per scope: the token log, its running sum, this UTC day's tokens, this
-- month's spend.
-- ARGV: reservation id, tokens reserved, tokens used, cost, then one flag per scope: 'd'
-- when the day counter took the reservation, 'm' when the month's spend is counted.
local id, reserved, used, cost = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for s = 0, #KEYS / 4 - 1 do
  local token_log, sum, day, month = KEYS[4*s+1], KEYS[4*s+2], KEYS[4*s+3], KEYS[4*s+4]
  local flags = ARGV[5+s]
  local at = redis.call('ZSCORE', token_log, id .. ':' .. reserved)
  if at then
    redis.call('ZREM', token_log, id .. ':' .. reserved)
    redis.call('ZADD', token_log, at, id .. ':' .. used)
    redis.call('INCRBY', sum, tonumber(used) - tonumber(reserved))
  end
  if string.find(flags, 'd') and redis.call('EXISTS', day) == 1 then
    redis.call('INCRBY', day, tonumber(used) - tonumber(reserved))
  end
  if string.find(flags, 'm') and redis.call('EXISTS', month) == 1 then
    redis.call('INCRBYFLOAT', month, cost)
  end
end
return 'ok'
