-- Lean increment: GET (an integer record is short), exact int64 sum with a
-- double fast path (both operands below 1e15 in magnitude: the sum is exact
-- in a double) and today's two-limb path otherwise; keeps the expiry of an
-- existing key (header digits and KEEPTTL).
-- KEYS[1] key; ARGV[1] header built by the service ('\255\2' .. now(16) ..
-- zeros(14)); ARGV[2] now µs; ARGV[3] delta (canonical decimal).
-- Returns {value, version} or {'F', reason, current version}.
local k = KEYS[1]
local now = tonumber(ARGV[2])
local d = ARGV[3]
local hdr = ARGV[1]
local v = redis.call('GET', k)
local base = '0'
if v then
  if #v < 32 or not string.find(v, '^\255\2%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  base = string.sub(v, 33)
  if not string.find(base, '^%-?%d+$') then
    return {'F', 'NOT_AN_INTEGER', string.sub(v, 3, 18)}
  end
  local prev = tonumber(string.sub(v, 3, 18))
  if prev >= now then now = prev + 1 end
  hdr = '\255\2' .. string.format('%016.0f', now) .. string.sub(v, 19, 32)
end
local r
if #base < 16 and #d < 16 then
  r = string.format('%.0f', tonumber(base) + tonumber(d))
else
  -- exact int64 as two limbs (today's APPLY `sum`)
  local B = 1000000000
  local function limbs(s)
    local neg = string.sub(s, 1, 1) == '-'
    local x = neg and string.sub(s, 2) or s
    local hi, lo = 0, tonumber(x)
    if #x > 9 then hi = tonumber(string.sub(x, 1, #x - 9)); lo = tonumber(string.sub(x, -9)) end
    if neg then return -hi, -lo end
    return hi, lo
  end
  local h1, l1 = limbs(base)
  local h2, l2 = limbs(d)
  local hi, lo = h1 + h2, l1 + l2
  if lo >= B then lo = lo - B; hi = hi + 1 elseif lo <= -B then lo = lo + B; hi = hi - 1 end
  if hi > 0 and lo < 0 then hi = hi - 1; lo = lo + B elseif hi < 0 and lo > 0 then hi = hi + 1; lo = lo - B end
  if hi > 9223372036 or (hi == 9223372036 and lo > 854775807)
      or hi < -9223372036 or (hi == -9223372036 and lo < -854775808) then
    return {'F', 'INCREMENT_OVERFLOW', string.sub(hdr, 3, 18)}
  end
  if hi == 0 then r = string.format('%d', lo) else r = string.format('%d%09d', hi, math.abs(lo)) end
end
if v then
  redis.call('SET', k, hdr .. r, 'KEEPTTL')
else
  redis.call('SET', k, hdr .. r)
end
return {r, now}
