-- Large values without the value entering Lua (Redis's Lua hashes every byte
-- of every string it is handed): the service sends, in one pipeline,
-- `SET <stage key> <record> PX 60000` (a private key in the same slot, the PX
-- only a guard against a lost second command) and then this script, which
-- checks the old header, fixes the version digits in place when needed
-- (SETRANGE), moves the staged value over the key (RENAME: no copy) and sets
-- the expiry (PERSIST, or PEXPIREAT for a TTL put).
-- KEYS[1] key; KEYS[2] stage key; ARGV[1] now as 16 digits (the version in
-- the staged record); ARGV[2] expiry for PEXPIREAT or ''.
local k, t = KEYS[1], KEYS[2]
local now = ARGV[1]
local h = redis.call('GETRANGE', k, '0', '31')
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    redis.call('DEL', t)
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = string.sub(h, 3, 18)
  if prev >= now then
    now = string.format('%016.0f', tonumber(prev) + 1)
    redis.call('SETRANGE', t, '2', now)
  end
end
redis.call('RENAME', t, k)
if ARGV[2] == '' then
  redis.call('PERSIST', k)
else
  redis.call('PEXPIREAT', k, ARGV[2])
end
return now
