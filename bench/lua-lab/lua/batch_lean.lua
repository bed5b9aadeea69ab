-- BatchPut of small values without TTL (the candidate): one MGET, one
-- EXISTS only when MGET saw absent keys (MGET answers nil for a key of
-- another type), per key one pattern check and one 16-digit string compare,
-- one MSET. Versions compared as strings; ARGV[1] is now as 16 digits.
-- Same arguments as batch_exc otherwise; same reply ({} or exceptions).
local call, find, sub = redis.call, string.find, string.sub
local HDR = '^\255\2%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d'
local now = ARGV[1]
local n = #KEYS
local olds = call('MGET', unpack(KEYS))
local a, out, absent, j = {}, {}, nil, 0
for i = 1, n do
  local h, v = olds[i], ARGV[i + 1]
  local ok = true
  if not h then
    absent = absent or {}
    absent[#absent + 1] = KEYS[i]
  elseif not find(h, HDR) then
    ok = false
    out[#out + 1] = i
    out[#out + 1] = {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  elseif sub(h, 3, 18) >= now then
    local nv = string.format('%016.0f', tonumber(sub(h, 3, 18)) + 1)
    v = '\255\2' .. nv .. sub(v, 19)
    out[#out + 1] = i
    out[#out + 1] = nv
  end
  if ok then
    a[j + 1] = KEYS[i]
    a[j + 2] = v
    j = j + 2
  end
end
if absent and call('EXISTS', unpack(absent)) > 0 then
  return redis.error_reply('WRONGTYPE a key of another type: retry with the per-key script')
end
if j > 0 then call('MSET', unpack(a)) end
return out
