-- Frozen copy of src/store/redis/scripts.rs at commit 24cdce7 (PRELUDE + APPLY_SRC).

local MAGIC = '\255\2'
local HDR = 32
local NO_EXP = '00000000000000'
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
local NOW_MS = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- exists, raw string, why-foreign (nil when the key holds our format)
local function load(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and v.err then return true, nil, 'the key is not a string' end
  if not v then return false, nil, nil end
  if #v < HDR or string.sub(v, 1, 2) ~= MAGIC then
    return true, v, 'the value has no state-service header'
  end
  -- (tonumber rather than a pattern match: it is cheaper, and the magic has
  -- already told ours from foreign strings; reads check the digits strictly.)
  if not tonumber(string.sub(v, 3, 18)) or not tonumber(string.sub(v, 19, 32)) then
    return true, v, 'bad version or expiry in the header'
  end
  return true, v, nil
end

local function exp_of(ttl) return string.format('%014.0f', NOW_MS + ttl) end

-- Writes header + payload with the expiry the header names (zeros: none).
local function store(k, ver, exp, payload, keep)
  local v = MAGIC .. ver .. exp .. payload
  if keep then
    redis.call('SET', k, v, 'KEEPTTL')
  elseif exp == NO_EXP then
    redis.call('SET', k, v)
  else
    redis.call('SET', k, v, 'PXAT', tonumber(exp))
  end
  return v
end

local function next_ver(ver)
  local c = tonumber(ver or '0') or 0
  if c >= NOW then c = c + 1 else c = NOW end
  return string.format('%016.0f', c)
end

-- An unconditional put without keep_ttl, the common write: the new version,
-- or a failure table when the key holds foreign data. Kept short because
-- Redis runs it once per key of a BatchPut.
local function put_plain(k, payload, ttl)
  local exists, v, bad = load(k)
  if bad then return {'F', 'INVALID_STORED_VALUE', '', bad} end
  local nv = next_ver(exists and string.sub(v, 3, 18))
  if ttl > 0 then store(k, nv, exp_of(ttl), payload, false) else store(k, nv, NO_EXP, payload, false) end
  return nv
end

local MODE = ARGV[1]

-- exists, version, expiry, payload, why-foreign
local function read(k)
  local exists, v, bad = load(k)
  if not exists then return false end
  if bad then return true, nil, nil, nil, bad end
  return true, string.sub(v, 3, 18), string.sub(v, 19, 32), string.sub(v, 33), nil
end

local function cond_fail(cond, exists, ver)
  if cond == '' then return nil end
  if cond == 'A' then
    if exists then return 'ALREADY_EXISTS' end
  elseif cond == 'E' then
    if not exists then return 'NOT_FOUND' end
  elseif not exists or ('V' .. ver) ~= cond then
    return 'VERSION_MISMATCH'
  end
  return nil
end

local function op_args(i)
  local b = 2 + (i - 1) * 5
  return ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4]
end

local function is_int(v)
  return v ~= nil and string.match(v, '^%-?%d+$') ~= nil
end

-- Exact int64 as two limbs: value = h * 1e9 + l, same sign, |l| < 1e9.
local B = 1000000000
local function limbs(s)
  local neg = string.sub(s, 1, 1) == '-'
  local d = neg and string.sub(s, 2) or s
  local h, l = 0, tonumber(d)
  if #d > 9 then
    h = tonumber(string.sub(d, 1, #d - 9))
    l = tonumber(string.sub(d, -9))
  end
  if neg then return -h, -l end
  return h, l
end
-- a + b as a canonical decimal, or nil when it leaves int64.
local function sum(a, b)
  local h1, l1 = limbs(a)
  local h2, l2 = limbs(b)
  local h, l = h1 + h2, l1 + l2
  if l >= B then l = l - B; h = h + 1 elseif l <= -B then l = l + B; h = h - 1 end
  if h > 0 and l < 0 then h = h - 1; l = l + B elseif h < 0 and l > 0 then h = h + 1; l = l - B end
  if h > 9223372036 or (h == 9223372036 and l > 854775807)
      or h < -9223372036 or (h == -9223372036 and l < -854775808) then
    return nil
  end
  if h == 0 then return string.format('%d', l) end
  return string.format('%d%09d', h, math.abs(l))
end

-- Performs op i for real; the condition is checked against the live state.
-- A put's result is its version alone (a string, not a table: cheaper for
-- Redis to convert, and BatchPut returns one per key).
local function apply(i)
  local k = KEYS[i]
  local kind, payload, ttl, keep, cond = op_args(i)
  if kind == 'P' and cond == '' and keep ~= '1' then return put_plain(k, payload, ttl) end
  local exists, ver, exp, cur, bad = read(k)
  if bad and not (kind == 'D' and cond == '') then
    return {'F', 'INVALID_STORED_VALUE', '', bad}
  end
  local failed = cond_fail(cond, exists, ver)
  if failed then return {'F', failed, ver or '', ''} end
  if kind == 'D' then
    if not exists then return {'D', '0'} end
    redis.call('DEL', k)
    return {'D', '1'}
  end
  local value = payload
  if kind == 'I' then
    local base = '0'
    if exists then
      if not is_int(cur) then return {'F', 'NOT_AN_INTEGER', ver, string.sub(cur, 1, 2)} end
      base = cur
    end
    value = sum(base, payload)
    if not value then return {'F', 'INCREMENT_OVERFLOW', ver or '', ''} end
    -- An increment keeps the expiry of an existing key; TTL applies on create.
    if exists then keep = '1'; ttl = 0 end
  end
  local nv = next_ver(ver)
  if ttl > 0 then
    store(k, nv, exp_of(ttl), value, false)
  elseif keep == '1' and exists then
    store(k, nv, exp, value, true)
  else
    store(k, nv, NO_EXP, value, false)
  end
  if kind == 'I' then return {'I', value, nv} end
  return nv
end

if MODE == 'atomic' then
  -- Phase 1: simulate every op in order; nothing is written.
  local sim = {}
  for i = 1, #KEYS do
    local k = KEYS[i]
    local kind, payload, ttl, keep, cond = op_args(i)
    local s = sim[k]
    if not s then
      local exists, ver, exp, cur, bad = read(k)
      s = {exists = exists, ver = ver, cur = cur, bad = bad}
      sim[k] = s
    end
    if s.bad and not (kind == 'D' and cond == '') then
      return {'ABORT', i, 'INVALID_STORED_VALUE', '', s.bad}
    end
    local failed = cond_fail(cond, s.exists, s.ver)
    if failed then return {'ABORT', i, failed, s.ver or '', ''} end
    if kind == 'D' then
      s.exists, s.ver, s.cur, s.bad = false, nil, nil, nil
    elseif kind == 'P' then
      s.exists, s.ver, s.cur, s.bad = true, next_ver(s.ver), payload, nil
    else
      local base = '0'
      if s.exists then
        if not is_int(s.cur) then
          return {'ABORT', i, 'NOT_AN_INTEGER', s.ver or '', string.sub(s.cur, 1, 2)}
        end
        base = s.cur
      end
      local r = sum(base, payload)
      if not r then return {'ABORT', i, 'INCREMENT_OVERFLOW', s.ver or '', ''} end
      s.exists, s.ver, s.cur = true, next_ver(s.ver), r
    end
  end
end

-- Phase 2 (or the only phase in `each` mode): apply.
local out = {'OK'}
for i = 1, #KEYS do
  out[#out + 1] = apply(i)
end
return out
