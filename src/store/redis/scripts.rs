//! The Lua scripts that write storage formats 2 and 3
//! (docs/design/storage-format.md, `record`).
//!
//! Reads are plain GET/MGET and need no script; every write is a script
//! because the new version depends on the old one and conditions must be
//! checked atomically (WATCH/MULTI is unsound on a multiplexed connection).
//!
//! Rules every script keeps:
//! - **Decide, then write.** Every check — conditions, foreign data, the
//!   header's digits, increment types and overflow, request ids — happens
//!   before the first write of the call, so a script never leaves half its
//!   work behind.
//! - **Out of memory is all or nothing.** Scripts start with a `#!lua`
//!   shebang, so Redis (7.0+) refuses a whole writing script up front while
//!   it is over `maxmemory`. RETIME, DELETE and FLOOR are flagged `allow-oom`.
//! - **The service stamps, Lua checks.** The service passes "now" (the next
//!   version, 16 digits, from its clock — `record::Clocks`) and absolute
//!   expiries on Redis's clock, and builds the records of unconditional puts
//!   itself; a script reads only the 32-byte header of the old value
//!   (GETRANGE: an old value can be megabytes, and every byte that enters
//!   Lua is hashed) and rewrites the version digits only when the old
//!   version is not below "now" (`max(previous + 1, now)`). Versions are
//!   compared as 16-digit strings, which order like the numbers. Numeric
//!   arguments to `redis.call` are passed as strings (Lua would format a
//!   number on every call). Measured in bench/lua-lab (docs/benchmarks.md).
//! - The fast scripts (PUT, STAGE, BATCH, DELETE) answer `SLOW` for what
//!   they do not handle (a record carrying request ids, a tombstone), and a
//!   key of another Redis type aborts them with WRONGTYPE before they write;
//!   the service then sends the op to APPLY, which handles everything.
//! - **The change feed is an add-on.** Each script exists twice: as
//!   written, and with the feed (`--watch`): `FEED_PRELUDE` in front and
//!   the lines marked `-- feed` kept. Without the feed those lines are cut,
//!   so a deployment without Watch runs exactly the scripts it ran before.
//!   The feed's keys come last in KEYS and its history length last in ARGV;
//!   the prelude takes them off, so the script bodies index KEYS and ARGV
//!   as before. Events are appended in the same script as the write they
//!   report, so a write and its event are one atomic step
//!   (docs/design/watch.md).

use std::sync::LazyLock;

use redis::Script;

/// A put of a record the service built, when the key holds no request ids:
/// the most frequent write.
///
/// KEYS[1] the key. ARGV[1] the record (format 2, version = now), ARGV[2]
/// now (16 digits), ARGV[3] the expiry in Unix ms for `PXAT` (absent: none).
/// Returns the version (16 digits), `{'SLOW'}`, or `{'F', reason, '', detail}`.
pub static PUT: Variants = Variants::new("#!lua", PUT_SRC);

const PUT_SRC: &str = r#"
local k, v, now = KEYS[1], ARGV[1], ARGV[2]
local h = redis.call('GETRANGE', k, '0', '31')
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    if string.sub(h, 1, 2) == '\255\3' then return {'SLOW'} end
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = string.sub(h, 3, 18)
  if prev >= now then
    now = string.format('%016.0f', tonumber(prev) + 1)
    v = '\255\2' .. now .. string.sub(v, 19)
  end
end
feed_before(k, h) -- feed
if ARGV[3] then
  redis.call('SET', k, v, 'PXAT', ARGV[3])
else
  redis.call('SET', k, v)
end
feed_put(k, v) -- feed
return now
"#;

/// The second half of a put of a large record: the service has just SET the
/// record under a private stage key in the key's slot (same pipeline), so
/// the value never passes through Lua; this checks the old header and moves
/// the stage over the key.
///
/// KEYS[1] the key, KEYS[2] the stage. ARGV[1] now (16 digits), ARGV[2] the
/// expiry in ms (`''`: none). Returns like PUT; on `SLOW` or a failure the
/// stage is deleted.
pub static STAGE: Variants = Variants::new("#!lua", STAGE_SRC);

const STAGE_SRC: &str = r#"
local k, t, now = KEYS[1], KEYS[2], ARGV[1]
local ok, h = pcall(redis.call, 'GETRANGE', k, '0', '31')
if not ok then
  redis.call('DEL', t)
  return {'SLOW'}
end
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    redis.call('DEL', t)
    if string.sub(h, 1, 2) == '\255\3' then return {'SLOW'} end
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = string.sub(h, 3, 18)
  if prev >= now then
    now = string.format('%016.0f', tonumber(prev) + 1)
    redis.call('SETRANGE', t, '2', now)
  end
end
if redis.call('EXISTS', t) == 0 then return {'LOST'} end
feed_before(k, h) -- feed
redis.call('RENAME', t, k)
if ARGV[2] == '' then
  redis.call('PERSIST', k)
else
  redis.call('PEXPIREAT', k, ARGV[2])
end
feed_put(k, redis.call('GET', k)) -- feed
return now
"#;

/// Unconditional puts of records the service built, for a BatchPut whose
/// items carry no condition, keep_ttl or request id.
///
/// KEYS[i] the keys. ARGV[1] now (16 digits); ARGV[2i], ARGV[2i+1] item i's
/// record and expiry in ms (`''`: none). Items without an expiry are written
/// with one MSET. Returns `{i, answer, …}` only for the items whose answer is
/// not the version they were given: a bumped version (16 digits), `'SLOW'`
/// (not written; send it to APPLY) or `{'F', …}`.
pub static BATCH: Variants = Variants::new("#!lua", BATCH_SRC);

const BATCH_SRC: &str = r#"
local call, find, sub = redis.call, string.find, string.sub
local now = ARGV[1]
local plain, pj, out = {}, 0, {}
for i = 1, #KEYS do
  local k, v, e = KEYS[i], ARGV[2 * i], ARGV[2 * i + 1]
  local h = call('GETRANGE', k, '0', '31')
  local ok = true
  if h ~= '' then
    if #h < 32 or not find(h, '^\255\2%d+$') then
      ok = false
      out[#out + 1] = i
      if sub(h, 1, 2) == '\255\3' then
        out[#out + 1] = 'SLOW'
      else
        out[#out + 1] = {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
      end
    elseif sub(h, 3, 18) >= now then
      local nv = string.format('%016.0f', tonumber(sub(h, 3, 18)) + 1)
      v = '\255\2' .. nv .. sub(v, 19)
      out[#out + 1] = i
      out[#out + 1] = nv
    end
  end
  if ok then
    feed_before(k, h) -- feed
    feed_put(k, v) -- feed
    if e == '' then
      plain[pj + 1] = k
      plain[pj + 2] = v
      pj = pj + 2
    else
      call('SET', k, v, 'PXAT', e)
    end
  end
end
if pj > 0 then call('MSET', unpack(plain)) end
return out
"#;

/// A conditional Delete without a request id (an unconditional one is a
/// plain DEL). Flagged `allow-oom`: deleting is how memory is freed.
///
/// KEYS[1] the key; ARGV[1] the condition (`E` exists, `V<16 digits>`).
/// Returns `{'D', '1'}`, `{'SLOW'}` or `{'F', reason, current_version, detail}`.
pub static DELETE: Variants = Variants::new("#!lua flags=allow-oom", DELETE_SRC);

const DELETE_SRC: &str = r#"
local k, cond = KEYS[1], ARGV[1]
local ok, h = pcall(redis.call, 'GETRANGE', k, '0', '31')
if not ok then return {'SLOW'} end
if h == '' then
  if cond == 'E' then return {'F', 'NOT_FOUND', '', ''} end
  return {'F', 'VERSION_MISMATCH', '', ''}
end
if #h < 32 or not string.find(h, '^\255\2%d+$') then
  if string.sub(h, 1, 2) == '\255\3' then return {'SLOW'} end
  return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
end
local ver = string.sub(h, 3, 18)
if cond ~= 'E' and ('V' .. ver) ~= cond then return {'F', 'VERSION_MISMATCH', ver, ''} end
feed_before(k, h) -- feed
redis.call('DEL', k)
feed_del(k, ver) -- feed
return {'D', '1'}
"#;

/// Changes the expiry of one key and nothing else (not the version): Expire,
/// Persist and Get with `refresh_ttl`. The header's expiry digits and the
/// key's Redis expiry are rewritten together so they never disagree. Flagged
/// `allow-oom`: the value keeps its size.
///
/// KEYS[1] the key; ARGV[1] the new expiry as the header holds it (14 digits;
/// zeros: persist); ARGV[2] `v` to return the value afterwards (for Get);
/// ARGV[3] the same expiry in ms without leading zeros, for PEXPIREAT.
/// Returns `{'NONE'}`, `{'BAD', why}` or `{'OK'[, value]}`.
pub static RETIME: Variants = Variants::new("#!lua flags=allow-oom", RETIME_SRC);

const RETIME_SRC: &str = r#"
local k, exp = KEYS[1], ARGV[1]
local ok, h = pcall(redis.call, 'GETRANGE', k, '0', '31')
if not ok then
  -- A tombstone (a deleted key's request ids) is absent; any other type is foreign.
  if redis.call('TYPE', k).ok == 'hash' and redis.call('HEXISTS', k, 't') == 1 then
    return {'NONE'}
  end
  return {'BAD', 'the key is not a string'}
end
if h == '' then return {'NONE'} end
if #h < 32 or not string.find(h, '^\255[\2\3]%d+$') then
  return {'BAD', 'the value has no state-service header'}
end
redis.call('SETRANGE', k, '18', exp)
if exp == '00000000000000' then
  redis.call('PERSIST', k)
  feed_untrack(k) -- feed
else
  redis.call('PEXPIREAT', k, ARGV[3])
  feed_track(k, ARGV[3], string.sub(h, 3, 18)) -- feed
end
if ARGV[2] == 'v' then return {'OK', redis.call('GET', k)} end
return {'OK'}
"#;

/// Raises the shared version floor (`record::Clocks`) to ARGV[1] (16 digits)
/// if it is lower, and returns the floor. Flagged `allow-oom`: a few bytes.
pub static FLOOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            "#!lua flags=allow-oom\n",
            r#"
local f = redis.call('GET', KEYS[1])
if not f or f < ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return f
"#,
        ]
        .concat(),
    )
});

/// Every write the fast scripts do not handle: conditions, keep_ttl,
/// increments, deletes with a condition or a request id, request ids on any
/// write, tombstones, foreign data reported per op, and Transact.
///
/// KEYS[i]  the key of op i.
/// ARGV[1]  `atomic` (Transact: check every op, in order, against the state
///          the earlier ops leave; write only if all pass) or `each` (every
///          op on its own; a failed op writes nothing and the rest go on).
/// ARGV[2]  now (16 digits). ARGV[3] the request-id window's cutoff (16
///          digits: entries with an older version are dropped). ARGV[4] the
///          most request-id entries a key keeps. ARGV[5] the expiry in ms of
///          a tombstone. ARGV[6], ARGV[7] the transaction's request-id hash
///          and request fingerprint (`''`: none).
/// ARGV[8+6(i-1) ..] six per op: kind (`P`, `D`, `I`); payload (encoded
///          value for P, decimal delta for I, `''` for D); expiry (`''`
///          none, `K` keep the existing one, else ms — for I, applied only
///          when the increment creates the key); condition (`''`, `A`
///          absent, `E` exists, `V<16 digits>`); request-id hash and
///          fingerprint (`''`: none).
///
/// Returns `{'OK', r1, r2, …}` where r is a put's version (a string),
/// `{'D', '0'|'1'}`, `{'I', value, version}` or, in `each` mode,
/// `{'F', reason, current_version, detail}`; in `atomic` mode when a check
/// fails `{'ABORT', op_index (1-based), reason, current_version, detail}`.
/// A replayed request id answers what the first attempt answered.
pub static APPLY: Variants = Variants::new("#!lua", APPLY_SRC);

const APPLY_SRC: &str = r#"
local MODE, NOW, CUT, MAX_IDS, TOMB_EXP = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local TX_ID, TX_FP = ARGV[6], ARGV[7]
local N = #KEYS
local NO_EXP = '00000000000000'
local find, sub, format = string.find, string.sub, string.format

local function op_args(i)
  local b = 8 + (i - 1) * 6
  return ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
end

-- The state of a key as the ops see it: exists, ver, exp, cur (payload),
-- meta (request-id entries, each '\n' .. id .. fp .. ver .. kind .. data),
-- bad (why the key is foreign), floor (the highest version the key has had,
-- kept across a delete), tomb (the final state keeps the meta as a
-- tombstone), dirty.
local function read(k)
  local ok, h = pcall(redis.call, 'GETRANGE', k, '0', '37')
  if not ok then
    local t = redis.pcall('HMGET', k, 't', 'v')
    if type(t) == 'table' and not t.err and t[1] then
      return {exists = false, meta = t[1], floor = t[2], was_tomb = true}
    end
    return {exists = true, bad = 'the key is not a string'}
  end
  if h == '' then return {exists = false, meta = ''} end
  local m = sub(h, 1, 2)
  if #h < 32 or not find(sub(h, 3, 32), '^%d+$') or (m ~= '\255\2' and m ~= '\255\3') then
    return {exists = true, bad = 'the value has no state-service header'}
  end
  local s = {exists = true, ver = sub(h, 3, 18), exp = sub(h, 19, 32), meta = '', start = 32}
  if m == '\255\3' then
    local len = sub(h, 33, 38)
    if #len < 6 or not find(len, '^%d+$') then
      return {exists = true, bad = 'bad meta length in the header'}
    end
    len = tonumber(len)
    if len > 0 then s.meta = redis.call('GETRANGE', k, '38', tostring(37 + len)) end
    s.start = 38 + len
  end
  s.floor = s.ver
  s.key = k
  s.had, s.was = h, s.ver -- feed
  return s
end

-- The payload of an existing key, read on first need (only increments and
-- rewrites that keep the value need it).
local function payload(s)
  if s.cur == nil then s.cur = redis.call('GETRANGE', s.key, tostring(s.start), '-1') end
  return s.cur
end

local function cond_fail(cond, s)
  if cond == '' then return nil end
  if cond == 'A' then
    if s.exists then return 'ALREADY_EXISTS' end
  elseif cond == 'E' then
    if not s.exists then return 'NOT_FOUND' end
  elseif not s.exists or ('V' .. s.ver) ~= cond then
    return 'VERSION_MISMATCH'
  end
  return nil
end

-- Exact int64 as two limbs: value = h * 1e9 + l, same sign, |l| < 1e9.
local B = 1000000000
local function limbs(s)
  local neg = sub(s, 1, 1) == '-'
  local d = neg and sub(s, 2) or s
  local h, l = 0, tonumber(d)
  if #d > 9 then
    h = tonumber(sub(d, 1, #d - 9))
    l = tonumber(sub(d, -9))
  end
  if neg then return -h, -l end
  return h, l
end
-- a + b as a canonical decimal, or nil when it leaves int64. Below 1e15 in
-- magnitude both fit a double exactly, and so does their sum.
local function sum(a, b)
  if #a < 16 and #b < 16 then return format('%.0f', tonumber(a) + tonumber(b)) end
  local h1, l1 = limbs(a)
  local h2, l2 = limbs(b)
  local h, l = h1 + h2, l1 + l2
  if l >= B then l = l - B; h = h + 1 elseif l <= -B then l = l + B; h = h - 1 end
  if h > 0 and l < 0 then h = h - 1; l = l + B elseif h < 0 and l > 0 then h = h + 1; l = l - B end
  if h > 9223372036 or (h == 9223372036 and l > 854775807)
      or h < -9223372036 or (h == -9223372036 and l < -854775808) then
    return nil
  end
  if h == 0 then return format('%d', l) end
  return format('%d%09d', h, math.abs(l))
end

local function next_ver(s)
  if s.floor and s.floor >= NOW then return format('%016.0f', tonumber(s.floor) + 1) end
  return NOW
end

-- The entry of request id `id` in `meta` (none once older than the
-- window): fingerprint, version, kind, data.
local function find_id(meta, id)
  if id == '' or meta == '' then return nil end
  local a = find(meta, '\n' .. id, 1, true)
  if not a then return nil end
  local e = find(meta, '\n', a + 1, true)
  local entry = sub(meta, a + 1, (e or 0) - 1)
  if sub(entry, 33, 48) < CUT then return nil end
  return sub(entry, 17, 32), sub(entry, 33, 48), sub(entry, 49, 49), sub(entry, 50)
end

-- `meta` without entries older than the window, keeping at most `keep`.
local function prune(meta, keep)
  if meta == '' then return '' end
  local out, n = {}, 0
  for entry in string.gmatch(meta, '\n([^\n]+)') do
    if n >= keep then break end
    if sub(entry, 33, 48) >= CUT then
      n = n + 1
      out[n] = entry
    end
  end
  if n == 0 then return '' end
  return '\n' .. table.concat(out, '\n')
end

local function remember(s, id, fp, ver, kind, data)
  s.meta = '\n' .. id .. fp .. ver .. kind .. data .. prune(s.meta, MAX_IDS - 1)
end

-- What a replayed entry answers.
local function replay(kind, ver, data)
  if kind == 'P' then return ver end
  if kind == 'D' then return {'D', data} end
  return {'I', data, ver}
end

-- Decides op i against state `s` and updates `s` to the state after it.
-- Returns the op's result, or nil, reason, current version, detail.
-- Nothing here writes to Redis.
local function decide(i, s)
  local kind, pay, exp, cond, id, fp = op_args(i)
  if s.bad and not (kind == 'D' and cond == '' and id == '') then
    return nil, 'INVALID_STORED_VALUE', '', s.bad
  end
  if id ~= '' then
    local efp, ever, ekind, edata = find_id(s.meta, id)
    if efp then
      if efp ~= fp then return nil, 'REQUEST_ID_REUSED', s.ver or '', '' end
      return replay(ekind, ever, edata)
    end
  end
  local failed = cond_fail(cond, s)
  if failed then return nil, failed, s.ver or '', '' end
  -- A foreign key (s.bad: only an unconditional delete gets here) has no meta.
  if s.meta and s.meta ~= '' then s.meta = prune(s.meta, MAX_IDS) end
  if kind == 'D' then
    local existed = s.exists and '1' or '0'
    local dv = next_ver(s)
    s.exists, s.ver, s.exp, s.cur, s.bad, s.dirty = false, nil, nil, nil, nil, true
    s.floor = dv
    if id ~= '' then
      remember(s, id, fp, dv, 'D', existed)
      s.tomb = true
    elseif not s.tomb then
      s.meta = ''
    end
    return {'D', existed}
  end
  local value = pay
  local newexp = NO_EXP
  if exp == 'K' then
    if s.exists then newexp = s.exp end
  elseif exp ~= '' then
    newexp = format('%014.0f', tonumber(exp))
  end
  if kind == 'I' then
    local base = '0'
    if s.exists then
      local cur = payload(s)
      if not find(cur, '^%-?%d+$') then return nil, 'NOT_AN_INTEGER', s.ver, sub(cur, 1, 2) end
      base = cur
      -- An increment keeps the expiry of an existing key; TTL applies on create.
      newexp = s.exp
    end
    value = sum(base, pay)
    if not value then return nil, 'INCREMENT_OVERFLOW', s.ver or '', '' end
  end
  local nv = next_ver(s)
  s.exists, s.ver, s.exp, s.cur, s.bad, s.floor, s.dirty = true, nv, newexp, value, nil, nv, true
  s.tomb = false
  if kind == 'I' then
    if id ~= '' then remember(s, id, fp, nv, 'I', value) end
    return {'I', value, nv}
  end
  if id ~= '' then remember(s, id, fp, nv, 'P', '') end
  return nv
end

-- Writes the decided state of key k.
local function flush(k, s)
  if not s.dirty then return end
  feed_before(k, s.had or '') -- feed
  if s.exists then
    local cur = payload(s)
    local v
    if s.meta ~= '' then
      v = '\255\3' .. s.ver .. s.exp .. format('%06d', #s.meta) .. s.meta .. cur
    else
      v = '\255\2' .. s.ver .. s.exp .. cur
    end
    if s.exp == NO_EXP then
      redis.call('SET', k, v)
    else
      -- A number: Redis refuses integers with leading zeros.
      redis.call('SET', k, v, 'PXAT', tonumber(s.exp))
    end
    feed_put(k, v) -- feed
  elseif s.tomb and s.meta ~= '' then
    redis.call('DEL', k)
    redis.call('HSET', k, 't', s.meta, 'v', s.floor)
    redis.call('PEXPIREAT', k, TOMB_EXP)
  else
    redis.call('DEL', k)
  end
  if not s.exists and s.was then feed_del(k, s.was) end -- feed
  s.dirty = false
end

-- A transaction's results as one entry's data: P<ver>, D0/D1, I<value>:<ver>.
local function encode_results(out)
  local parts = {}
  for j = 2, #out do
    local r = out[j]
    if type(r) == 'string' then
      parts[#parts + 1] = 'P' .. r
    elseif r[1] == 'D' then
      parts[#parts + 1] = 'D' .. r[2]
    else
      parts[#parts + 1] = 'I' .. r[2] .. ':' .. r[3]
    end
  end
  return table.concat(parts, ',')
end

local function decode_results(data)
  local out = {'OK'}
  for p in string.gmatch(data, '[^,]+') do
    local c = sub(p, 1, 1)
    if c == 'P' then
      out[#out + 1] = sub(p, 2)
    elseif c == 'D' then
      out[#out + 1] = {'D', sub(p, 2)}
    else
      local v, ver = string.match(p, '^I(%-?%d+):(%d+)$')
      out[#out + 1] = {'I', v, ver}
    end
  end
  return out
end

local out = {'OK'}
if MODE == 'atomic' then
  -- Phase 1: decide every op in order; nothing is written.
  local states, order = {}, {}
  local first = read(KEYS[1])
  states[KEYS[1]] = first
  order[1] = KEYS[1]
  if TX_ID ~= '' and not first.bad then
    local efp, _, ekind, edata = find_id(first.meta, TX_ID)
    if efp then
      if efp ~= TX_FP or ekind ~= 'T' then
        return {'ABORT', 1, 'REQUEST_ID_REUSED', first.ver or '', ''}
      end
      return decode_results(edata)
    end
  end
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
  if TX_ID ~= '' then
    local s = states[KEYS[1]]
    local ver = s.ver or s.floor or NOW
    s.meta = '\n' .. TX_ID .. TX_FP .. ver .. 'T' .. encode_results(out) .. prune(s.meta or '', MAX_IDS - 1)
    s.dirty = true
    if not s.exists then s.tomb = true end
  end
  -- Phase 2: write each touched key's final state once; nothing can fail here.
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

/// What the feed variants add in front of a script (after the shebang).
///
/// KEYS ends with the tenant's stream, the expiry index (sorted set) and
/// the version index (hash) of `keyspace::FeedKeys`; ARGV ends with the
/// stream's approximate length (`--watch-history`). Events are stream
/// entries `k` storage key, `o` kind (`P` put, `D` delete, `E` expire),
/// and `r` the record written (P) or `v` the version that ended (D, E).
/// Keys with an expiry are indexed so that the sweeper can report the
/// expiry, which no script sees happen; a write that finds its key absent
/// but still indexed reports that expiry first.
const FEED_PRELUDE: &str = r#"
local FEED_S, FEED_Z, FEED_H = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
KEYS[#KEYS] = nil
KEYS[#KEYS] = nil
KEYS[#KEYS] = nil
local FEED_MAX = ARGV[#ARGV]
ARGV[#ARGV] = nil
local function feed_add(k, o, f, x)
  redis.call('XADD', FEED_S, 'MAXLEN', '~', FEED_MAX, '*', 'k', k, 'o', o, f, x)
end
local function feed_track(k, exp_ms, ver)
  redis.call('ZADD', FEED_Z, exp_ms, k)
  redis.call('HSET', FEED_H, k, ver)
end
local function feed_untrack(k)
  redis.call('ZREM', FEED_Z, k)
  redis.call('HDEL', FEED_H, k)
end
-- Before key k, whose old header is h ('' if absent), is written or deleted.
local function feed_before(k, h)
  if h == '' then
    local ov = redis.call('HGET', FEED_H, k)
    if ov then
      feed_add(k, 'E', 'v', ov)
      feed_untrack(k)
    end
  elseif string.sub(h, 19, 32) ~= '00000000000000' then
    feed_untrack(k)
  end
end
-- After record v was written under k.
local function feed_put(k, v)
  feed_add(k, 'P', 'r', v)
  local exp = string.sub(v, 19, 32)
  if exp ~= '00000000000000' then feed_track(k, exp, string.sub(v, 3, 18)) end
end
local function feed_del(k, ver)
  feed_add(k, 'D', 'v', ver)
end
"#;

/// Reports the expiry of KEYS[1] if its TTL has run out (feed only): the
/// key is absent (Redis expired it, on its own clock) while the index still
/// holds it. A key that is still there had its expiry moved: the index is
/// corrected instead. Returns 1 when an EXPIRE was appended.
pub static EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            "#!lua flags=allow-oom\n",
            FEED_PRELUDE,
            r#"
local k = KEYS[1]
local ov = redis.call('HGET', FEED_H, k)
if not ov then
  redis.call('ZREM', FEED_Z, k)
  return 0
end
if redis.call('EXISTS', k) == 1 then
  local ok, h = pcall(redis.call, 'GETRANGE', k, '0', '31')
  if ok and #h >= 32 and string.sub(h, 19, 32) ~= '00000000000000' then
    feed_track(k, string.sub(h, 19, 32), string.sub(h, 3, 18))
  else
    feed_untrack(k)
  end
  return 0
end
feed_add(k, 'E', 'v', ov)
feed_untrack(k)
return 1
"#,
        ]
        .concat(),
    )
});

/// The keys whose indexed expiry is due on Redis's clock (feed only):
/// KEYS[1] the expiry index, ARGV[1] the most to return.
pub static DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"#!lua flags=no-writes
local t = redis.call('TIME')
local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', '0', ARGV[1])
"#,
    )
});

/// Where a watch starts (feed only): the feed's epoch — KEYS[2], set to
/// ARGV[1] if Redis has none — and the state of the tenant's stream
/// KEYS[1]. Returns `{epoch, last id, first id kept, entries ever added,
/// entries kept}` (`0-0` ids and zero counts for no stream).
pub static HEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"#!lua
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {epoch, '0-0', '0-0', 0, 0} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local f = {}
for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
return {epoch, f['last-generated-id'], f['recorded-first-entry-id'], f['entries-added'], f['length']}
"#,
    )
});

/// A write script in its two forms: without the feed (the lines marked
/// `-- feed` cut) and with it (`FEED_PRELUDE` in front).
pub struct Variants {
    shebang: &'static str,
    src: &'static str,
    plain: std::sync::OnceLock<Script>,
    feed: std::sync::OnceLock<Script>,
}

impl Variants {
    const fn new(shebang: &'static str, src: &'static str) -> Self {
        Self {
            shebang,
            src,
            plain: std::sync::OnceLock::new(),
            feed: std::sync::OnceLock::new(),
        }
    }

    /// The script with the feed when `feed`, else without.
    pub fn get(&self, feed: bool) -> &Script {
        if feed {
            self.feed
                .get_or_init(|| Script::new(&[self.shebang, "\n", FEED_PRELUDE, self.src].concat()))
        } else {
            self.plain.get_or_init(|| {
                let body: String = self
                    .src
                    .lines()
                    .filter(|l| !l.trim_end().ends_with("-- feed"))
                    .flat_map(|l| [l, "\n"])
                    .collect();
                Script::new(&[self.shebang, "\n", &body].concat())
            })
        }
    }
}
