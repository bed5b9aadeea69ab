-- Lean Transact (atomic) of puts with conditions: phase 1 reads every header
-- (redis.call: a key of another type raises before anything is written) and
-- checks every condition against the state the earlier ops leave; phase 2
-- writes. KEYS[i] key of op i; ARGV[1] now µs; per op three args: record,
-- condition ('', 'A', 'E', 'V'), version for 'V'.
-- Returns {} when every op got version = now, else {i, version, …} for the
-- ops that did not; or {'ABORT', i, reason, current}.
local call, find, sub, fmt = redis.call, string.find, string.sub, string.format
local now = tonumber(ARGV[1])
local n = #KEYS
local st = {}
local vals = {}
local out = {}
for i = 1, n do
  local k = KEYS[i]
  local b = 2 + (i - 1) * 3
  local c = ARGV[b + 1]
  local s = st[k]
  if not s then
    local h = call('GETRANGE', k, 0, 31)
    if h == '' then
      s = {false, nil}
    elseif #h < 32 or not find(h, '^\255\2%d+$') then
      return {'ABORT', i, 'INVALID_STORED_VALUE', ''}
    else
      s = {true, sub(h, 3, 18)}
    end
    st[k] = s
  end
  if c ~= '' then
    if c == 'A' then
      if s[1] then return {'ABORT', i, 'ALREADY_EXISTS', s[2]} end
    elseif not s[1] then
      return {'ABORT', i, c == 'E' and 'NOT_FOUND' or 'VERSION_MISMATCH', ''}
    elseif c == 'V' and s[2] ~= ARGV[b + 2] then
      return {'ABORT', i, 'VERSION_MISMATCH', s[2]}
    end
  end
  local v = ARGV[b]
  if s[1] and tonumber(s[2]) >= now then
    local nv = fmt('%016.0f', tonumber(s[2]) + 1)
    v = '\255\2' .. nv .. sub(v, 19)
    s[2] = nv
    out[#out + 1] = i
    out[#out + 1] = tonumber(nv)
  else
    s[2] = sub(v, 3, 18)
  end
  s[1] = true
  vals[i] = v
end
for i = 1, n do call('SET', KEYS[i], vals[i]) end
return out
