//! The Lua scripts of storage format 2 (docs/design/storage-format.md).
//!
//! A stored key is one Redis string: a 32-byte header (magic `\xff\x02`,
//! 16-digit version, 14-digit absolute expiry in Unix ms or zeros) followed by
//! the encoded value (`store::codec`). Reads are plain GET/MGET and need no
//! script; every write is a script because the new version depends on the old
//! one and conditions must be checked atomically (WATCH/MULTI is unsound on a
//! multiplexed connection).
//!
//! Rules every script keeps:
//! - **Decide, then write.** Every check — conditions, foreign data, the
//!   header's digits, increment types and overflow, the expiry fitting the
//!   header — happens before the first write of the call, so a script never
//!   leaves half its work behind.
//! - **Out of memory is all or nothing.** Scripts start with a `#!lua`
//!   shebang, so Redis (7.0+) refuses a whole writing script up front while it
//!   is over `maxmemory`, instead of failing the first SET inside it. The
//!   scripts that only change expiries or delete are flagged `allow-oom`.
//! - Lua numbers are doubles: versions (< 2^53) and expiries are exact in
//!   them, increments use exact two-limb arithmetic, and numbers are
//!   formatted with `%0N.0f` because `tostring` switches to exponent notation
//!   above 1e14.

use std::sync::LazyLock;

use redis::Script;

/// The helpers every script starts with: the header layout and the clock.
/// Kept in one place so the scripts cannot disagree about the format.
const PRELUDE: &str = r#"
local MAGIC = '\255\2'
local HDR = 32
local NO_EXP = '00000000000000'
-- The header's expiry field holds 14 digits of Unix ms (until the year 5138).
local MAX_EXP = 99999999999999
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
  if not string.find(string.sub(v, 3, HDR), '^%d+$') then
    return true, v, 'bad version or expiry in the header'
  end
  return true, v, nil
end

-- The header's expiry for a TTL in ms from now; nil when it would not fit.
local function exp_of(ttl)
  local e = NOW_MS + ttl
  if e > MAX_EXP then return nil end
  return string.format('%014.0f', e)
end

-- Writes header + payload with the expiry the header names (zeros: none),
-- setting the key's own Redis expiry to the same instant.
local function store(k, ver, exp, payload)
  local v = MAGIC .. ver .. exp .. payload
  if exp == NO_EXP then
    redis.call('SET', k, v)
  else
    redis.call('SET', k, v, 'PXAT', tonumber(exp))
  end
  return v
end

-- Above the highest version the key has had (`floor`, a 16-digit string or
-- nil) and not below the clock.
local function next_ver(floor)
  local c = tonumber(floor or '0') or 0
  if c >= NOW then c = c + 1 else c = NOW end
  return string.format('%016.0f', c)
end
"#;

/// Writes: put / delete / increment ops, each with an optional condition.
///
/// KEYS[i]  storage key of op i.
/// ARGV[1]  `atomic` (check every op, in order, against the state the earlier
///          ops leave; write only if all pass) or `each` (apply ops one by one;
///          a failed op writes nothing and the rest go on).
/// ARGV[2+5(i-1) ..]  five args per op: kind (`P`, `D`, `I`), payload (encoded
///          value for P, decimal delta for I, empty for D), ttl in ms (`0`:
///          none), keep_ttl (`1`/`0`), condition (empty, `A` absent, `E`
///          exists, `V<16-digit version>`).
///
/// Returns `{'OK', r1, r2, …}` where each r is a put's version (a string),
/// `{'D', '0'|'1'}`, `{'I', value, version}` or, in `each` mode only,
/// `{'F', reason, current_version, detail}`; in `atomic` mode when a check
/// fails, `{'ABORT', op_index (1-based), reason, current_version, detail}`;
/// `{'BAD_TTL', op_index}` when an expiry would not fit the header (the
/// service's --max-ttl prevents it; nothing is written).
pub static APPLY: LazyLock<Script> =
    LazyLock::new(|| Script::new(&["#!lua\n", PRELUDE, APPLY_SRC].concat()));

const APPLY_SRC: &str = r#"
local MODE = ARGV[1]
local N = #KEYS

local function op_args(i)
  local b = 2 + (i - 1) * 5
  return ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4]
end

-- Every expiry must fit the header before anything is written.
for i = 1, N do
  local _, _, ttl = op_args(i)
  if ttl > 0 and not exp_of(ttl) then return {'BAD_TTL', i} end
end

-- The state of a key as the ops see it: exists, version, expiry, value
-- (payload), why-foreign, and `floor`, the highest version the key has had
-- in this call (kept across a delete so a re-create never repeats it).
local function read(k)
  local exists, v, bad = load(k)
  if not exists then return {exists = false} end
  if bad then return {exists = true, bad = bad} end
  local ver = string.sub(v, 3, 18)
  return {exists = true, ver = ver, exp = string.sub(v, 19, 32), cur = string.sub(v, 33), floor = ver}
end

local function cond_fail(cond, s)
  if cond == '' then return nil end
  if cond == 'A' then
    if s.exists then return 'ALREADY_EXISTS' end
  elseif cond == 'E' then
    if not s.exists then return 'NOT_FOUND' end
  elseif not s.exists or ('V' .. (s.ver or '')) ~= cond then
    return 'VERSION_MISMATCH'
  end
  return nil
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

-- Decides op i against state `s` and updates `s` to the state after it.
-- Returns the op's result, or nil, reason, current version, detail.
-- Nothing here writes to Redis.
local function decide(i, s)
  local kind, payload, ttl, keep, cond = op_args(i)
  if s.bad and not (kind == 'D' and cond == '') then
    return nil, 'INVALID_STORED_VALUE', '', s.bad
  end
  local failed = cond_fail(cond, s)
  if failed then return nil, failed, s.ver or '', '' end
  if kind == 'D' then
    local existed = s.exists
    s.exists, s.ver, s.exp, s.cur, s.bad, s.dirty = false, nil, nil, nil, nil, true
    if existed then return {'D', '1'} end
    return {'D', '0'}
  end
  local value, exp = payload, NO_EXP
  if ttl > 0 then exp = exp_of(ttl) elseif keep == '1' and s.exists then exp = s.exp end
  if kind == 'I' then
    local base = '0'
    if s.exists then
      if not is_int(s.cur) then return nil, 'NOT_AN_INTEGER', s.ver, string.sub(s.cur, 1, 2) end
      base = s.cur
      -- An increment keeps the expiry of an existing key; TTL applies on create.
      exp = s.exp
    end
    value = sum(base, payload)
    if not value then return nil, 'INCREMENT_OVERFLOW', s.ver or '', '' end
  end
  local nv = next_ver(s.floor)
  s.exists, s.ver, s.exp, s.cur, s.bad, s.floor, s.dirty = true, nv, exp, value, nil, nv, true
  if kind == 'I' then return {'I', value, nv} end
  return nv
end

-- Writes the decided state of key k.
local function flush(k, s)
  if not s.dirty then return end
  if s.exists then store(k, s.ver, s.exp, s.cur) else redis.call('DEL', k) end
  s.dirty = false
end

local out = {'OK'}
if MODE == 'atomic' then
  -- Phase 1: decide every op in order; nothing is written.
  local states, order = {}, {}
  for i = 1, N do
    local k = KEYS[i]
    local s = states[k]
    if not s then
      s = read(k)
      states[k] = s
      order[#order + 1] = k
    end
    local r, reason, ver, detail = decide(i, s)
    if not r then return {'ABORT', i, reason, ver, detail} end
    out[#out + 1] = r
  end
  -- Phase 2: write each touched key's final state; nothing can fail here.
  for _, k in ipairs(order) do flush(k, states[k]) end
else
  -- Each op on its own: decided against the live state, then written.
  for i = 1, N do
    local k = KEYS[i]
    local s = read(k)
    local r, reason, ver, detail = decide(i, s)
    if r then
      flush(k, s)
      out[#out + 1] = r
    else
      out[#out + 1] = {'F', reason, ver, detail}
    end
  end
end
return out
"#;

/// A single unconditional Put or PutWithTtl (no `keep_ttl`), the most
/// frequent write: APPLY's arguments and mode dispatch cost Redis about a
/// quarter more per call (docs/design/storage-format.md).
///
/// KEYS[1] storage key; ARGV[1] encoded value; ARGV[2] TTL in ms (`0`: none).
/// Returns the new version (16 digits), `{'F', reason, '', detail}` for
/// foreign data, or `{'BAD_TTL', 1}`.
pub static PUT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&["#!lua\n", PRELUDE, PUT_SRC].concat()));

const PUT_SRC: &str = r#"
local k, ttl = KEYS[1], tonumber(ARGV[2])
local exp = NO_EXP
if ttl > 0 then
  exp = exp_of(ttl)
  if not exp then return {'BAD_TTL', 1} end
end
local exists, v, bad = load(k)
if bad then return {'F', 'INVALID_STORED_VALUE', '', bad} end
local nv = next_ver(exists and string.sub(v, 3, 18))
store(k, nv, exp, ARGV[1])
return nv
"#;

/// A conditional Delete (an unconditional one is a plain DEL). Flagged
/// `allow-oom`: deleting is how an operator frees memory.
///
/// KEYS[1] storage key; ARGV[1] condition (`E` exists, `V<16 digits>`).
/// Returns `{'D', '0'|'1'}` or `{'F', reason, current_version, detail}`.
pub static DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&["#!lua flags=allow-oom\n", PRELUDE, DELETE_SRC].concat()));

const DELETE_SRC: &str = r#"
local k, cond = KEYS[1], ARGV[1]
local exists, v, bad = load(k)
local ver = exists and not bad and string.sub(v, 3, 18) or nil
if bad then return {'F', 'INVALID_STORED_VALUE', '', bad} end
if cond == 'E' then
  if not exists then return {'F', 'NOT_FOUND', '', ''} end
elseif not exists or ('V' .. ver) ~= cond then
  return {'F', 'VERSION_MISMATCH', ver or '', ''}
end
redis.call('DEL', k)
return {'D', '1'}
"#;

/// Changes the expiry of one key and nothing else (not the version): Expire,
/// Persist and Get with `refresh_ttl`. The header's expiry and the key's Redis
/// expiry are rewritten together so they never disagree. Flagged
/// `allow-oom`: the value keeps its size.
///
/// KEYS[1] storage key; ARGV[1] new TTL in ms (`0`: persist); ARGV[2] `v` to
/// return the rewritten string (for Get), anything else to return nothing.
/// Returns `{'NONE'}`, `{'BAD', why}`, `{'BAD_TTL', 1}` or `{'OK'[, raw string]}`.
pub static RETIME: LazyLock<Script> =
    LazyLock::new(|| Script::new(&["#!lua flags=allow-oom\n", PRELUDE, RETIME_SRC].concat()));

const RETIME_SRC: &str = r#"
local k = KEYS[1]
local ttl = tonumber(ARGV[1])
local exp = NO_EXP
if ttl > 0 then
  exp = exp_of(ttl)
  if not exp then return {'BAD_TTL', 1} end
end
local exists, v, bad = load(k)
if not exists then return {'NONE'} end
if bad then return {'BAD', bad} end
local nv = store(k, string.sub(v, 3, 18), exp, string.sub(v, 33))
if ARGV[2] == 'v' then return {'OK', nv} end
return {'OK'}
"#;
