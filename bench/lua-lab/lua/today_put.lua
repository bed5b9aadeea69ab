-- Frozen copy of src/store/redis/scripts.rs at commit 24cdce7 (PRELUDE + PUT).

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
return put_plain(KEYS[1], ARGV[1], tonumber(ARGV[2]))
