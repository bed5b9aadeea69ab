-- BatchPut of small values without TTL in two commands: MGET of the old
-- values (whole values: only for small ones), one EXISTS over the keys MGET
-- saw as absent (MGET answers nil for a key of another type), then one MSET
-- (which also clears old TTLs, as a put without keep_ttl must).
-- Same arguments as batch_exc; same reply.
local call, find, sub, fmt = redis.call, string.find, string.sub, string.format
local now = tonumber(ARGV[1])
local n = #KEYS
local olds = call('MGET', unpack(KEYS))
local absent = {}
for i = 1, n do if not olds[i] then absent[#absent + 1] = KEYS[i] end end
if #absent > 0 and call('EXISTS', unpack(absent)) > 0 then
  return redis.error_reply('WRONGTYPE a key of another type: retry with the per-key script')
end
local out, args = {}, {}
for i = 1, n do
  local h, v = olds[i], ARGV[i + 1]
  if h and (#h < 32 or not find(h, '^\255\2%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d')) then
    out[#out + 1] = i
    out[#out + 1] = {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  else
    if h then
      local prev = tonumber(sub(h, 3, 18))
      if prev >= now then
        v = '\255\2' .. fmt('%016.0f', prev + 1) .. sub(v, 19)
        out[#out + 1] = i
        out[#out + 1] = prev + 1
      end
    end
    args[#args + 1] = KEYS[i]
    args[#args + 1] = v
  end
end
if #args > 0 then call('MSET', unpack(args)) end
return out
