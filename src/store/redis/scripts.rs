//! The Lua scripts of storage format 1 (docs/design/storage-format.md).
//!
//! Conditional writes live in scripts because WATCH/MULTI is unsound on a
//! multiplexed connection. Arithmetic on stored ints is done by HINCRBY, never
//! by Lua (Lua numbers are doubles); where a transaction must know in advance
//! whether an increment will overflow, it uses exact two-limb arithmetic.
//! Versions are formatted with `%.0f` because Lua's `tostring` switches to
//! exponent notation above 1e14.

use std::sync::LazyLock;

use redis::Script;

/// Writes: put / delete / increment ops, each with an optional condition.
///
/// KEYS[i]  storage key of op i.
/// ARGV[1]  `atomic` (check every op, in order, against the state the earlier
///          ops leave; write only if all pass) or `each` (apply ops one by one;
///          a failed op writes nothing and the rest go on).
/// ARGV[2+5(i-1) ..]  five args per op: kind (`P`, `D`, `I`), payload (encoded
///          value for P, decimal delta for I, empty for D), ttl in ms (`0`: none),
///          keep_ttl (`1`/`0`), condition (empty, `A` absent, `E` exists,
///          `V<version>`).
///
/// Returns `{'OK', r1, r2, …}` where each r is `{'P', version}`,
/// `{'D', '0'|'1'}`, `{'I', value, version}` or, in `each` mode only,
/// `{'F', reason, current_version, detail}`; or, in `atomic` mode when a check
/// fails, `{'ABORT', op_index (1-based), reason, current_version, detail}`.
pub static APPLY: LazyLock<Script> = LazyLock::new(|| Script::new(APPLY_SRC));

const APPLY_SRC: &str = r#"
local MODE = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function next_ver(ver)
  local c = tonumber(ver or '0') or 0
  if c >= NOW then c = c + 1 else c = NOW end
  return string.format('%.0f', c)
end

-- exists, version string, why-foreign (nil when the key is in format 1)
local function read(k)
  local r = redis.pcall('HMGET', k, 'fmt', 'ver')
  if type(r) == 'table' and r.err then
    return true, nil, 'the key is not a hash'
  end
  if not r[1] then
    if redis.call('EXISTS', k) == 1 then
      return true, nil, 'the hash has no format marker'
    end
    return false, nil, nil
  end
  if r[1] ~= '1' then
    return true, nil, 'unknown format marker ' .. tostring(r[1])
  end
  if not r[2] or not tonumber(r[2]) then
    return true, nil, 'missing or bad version field'
  end
  return true, r[2], nil
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
local function add(h1, l1, h2, l2)
  local h, l = h1 + h2, l1 + l2
  if l >= B then l = l - B; h = h + 1 elseif l <= -B then l = l + B; h = h - 1 end
  if h > 0 and l < 0 then h = h - 1; l = l + B elseif h < 0 and l > 0 then h = h + 1; l = l - B end
  return h, l
end
local function overflows(h, l)
  return h > 9223372036 or (h == 9223372036 and l > 854775807)
      or h < -9223372036 or (h == -9223372036 and l < -854775808)
end

-- Performs op i for real; the condition is checked against the live state.
local function apply(i)
  local k = KEYS[i]
  local kind, payload, ttl, keep, cond = op_args(i)
  local exists, ver, bad = read(k)
  if bad and not (kind == 'D' and cond == '') then
    return {'F', 'INVALID_STORED_VALUE', '', bad}
  end
  local failed = cond_fail(cond, exists, ver)
  if failed then return {'F', failed, ver or '', ''} end
  if kind == 'D' then
    if not exists then return {'D', '0'} end
    redis.call('DEL', k)
    return {'D', '1'}
  elseif kind == 'P' then
    local nv = next_ver(ver)
    redis.call('HSET', k, 'fmt', '1', 'ver', nv, 'val', payload)
    if ttl > 0 then
      redis.call('PEXPIRE', k, ttl)
    elseif keep ~= '1' and exists then
      redis.call('PERSIST', k)
    end
    return {'P', nv}
  end
  local r = redis.pcall('HINCRBY', k, 'val', payload)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'overflow', 1, true) then
      return {'F', 'INCREMENT_OVERFLOW', ver or '', ''}
    end
    local cur = redis.call('HGET', k, 'val') or ''
    return {'F', 'NOT_AN_INTEGER', ver or '', string.sub(cur, 1, 2)}
  end
  local nv = next_ver(ver)
  redis.call('HSET', k, 'fmt', '1', 'ver', nv)
  if not exists and ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  return {'I', redis.call('HGET', k, 'val'), nv}
end

if MODE == 'atomic' then
  -- Phase 1: simulate every op in order; nothing is written.
  local sim = {}
  for i = 1, #KEYS do
    local k = KEYS[i]
    local kind, payload, ttl, keep, cond = op_args(i)
    local s = sim[k]
    if not s then
      local exists, ver, bad = read(k)
      s = {exists = exists, ver = ver, bad = bad}
      sim[k] = s
    end
    if s.bad and not (kind == 'D' and cond == '') then
      return {'ABORT', i, 'INVALID_STORED_VALUE', '', s.bad}
    end
    local failed = cond_fail(cond, s.exists, s.ver)
    if failed then return {'ABORT', i, failed, s.ver or '', ''} end
    if kind == 'D' then
      s.exists, s.ver, s.bad, s.int, s.head = false, nil, nil, nil, nil
    elseif kind == 'P' then
      s.exists, s.ver, s.bad = true, next_ver(s.ver), nil
      if is_int(payload) then s.int, s.head = payload, nil else s.int, s.head = nil, string.sub(payload, 1, 2) end
    else
      local cur = '0'
      if s.exists then
        if s.int == nil and s.head == nil then
          local v = redis.call('HGET', k, 'val') or ''
          if is_int(v) then s.int = v else s.head = string.sub(v, 1, 2) end
        end
        if s.head then return {'ABORT', i, 'NOT_AN_INTEGER', s.ver or '', s.head} end
        cur = s.int
      end
      local h1, l1 = limbs(cur)
      local h2, l2 = limbs(payload)
      local h, l = add(h1, l1, h2, l2)
      if overflows(h, l) then return {'ABORT', i, 'INCREMENT_OVERFLOW', s.ver or '', ''} end
      if h == 0 then s.int = string.format('%d', l)
      else s.int = string.format('%d%09d', h, math.abs(l)) end
      s.exists, s.ver, s.head = true, next_ver(s.ver), nil
    end
  end
end

-- Phase 2 (or the only phase in `each` mode): apply.
local out = {'OK'}
for i = 1, #KEYS do
  out[#out + 1] = apply(i)
end
return out
"#;

/// Read with expiry refresh, atomically.
///
/// KEYS[1] storage key; ARGV[1] new TTL in ms.
/// Returns `{'NONE'}`, `{'BAD', why}` or `{'OK', val, ver, pttl}`.
pub static GET_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = KEYS[1]
local r = redis.pcall('HMGET', k, 'fmt', 'val', 'ver')
if type(r) == 'table' and r.err then return {'BAD', 'the key is not a hash'} end
if not r[1] then
  if redis.call('EXISTS', k) == 1 then return {'BAD', 'the hash has no format marker'} end
  return {'NONE'}
end
if r[1] ~= '1' then return {'BAD', 'unknown format marker ' .. tostring(r[1])} end
redis.call('PEXPIRE', k, ARGV[1])
return {'OK', r[2], r[3], redis.call('PTTL', k)}
"#,
    )
});

/// Removes the expiry; reports whether the key existed (PERSIST alone cannot
/// tell an absent key from one without expiry).
pub static PERSIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"#,
    )
});
