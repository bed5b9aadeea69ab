//! Lua for the admin operations (issue 15), kept apart from `scripts` so the
//! data path's scripts stay untouched. Same rules as there: decide, then
//! write; the service stamps (it builds the record and passes `now`), Lua
//! checks; a `#!lua` shebang so Redis refuses the script whole at
//! `maxmemory`.

use std::sync::LazyLock;

use redis::Script;

/// Import of entries under a conflict policy, each key decided and written
/// on its own (one atomic step per key, not per call).
///
/// KEYS: the storage keys. ARGV[1] the policy (`O` overwrite, `S` skip
/// existing, `N` newer version wins), ARGV[2] now (16 digits, the service's
/// version clock), then per key: the record the service built (format 2,
/// version digits = the imported version or now), the imported version (16
/// digits, `''` for none) and the expiry in Unix ms for `PXAT` (`''`: none).
///
/// Per key: `{'W', version}` written, `{'S', current version}` left alone by
/// the policy, or `{'F', 'INVALID_STORED_VALUE', '', detail}` for data
/// another tool wrote (never overwritten, as with every write).
///
/// The written version is the imported one when it is above every version
/// the key has (a live key's) or had (a tombstone's `v`); otherwise the next
/// one above it, `max(floor + 1, now)`, as any write would pick. So versions
/// of a key never go backwards, whatever the backup holds.
pub static IMPORT: LazyLock<Script> = LazyLock::new(|| script("#!lua", IMPORT_SRC));

const IMPORT_SRC: &str = r#"
local policy, now = ARGV[1], ARGV[2]
local sub, find, format = string.sub, string.find, string.format
local out = {}
for i = 1, #KEYS do
  local k, rec, ver, exp = KEYS[i], ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local cur, had, bad = nil, nil, nil
  local ok, h = pcall(redis.call, 'GETRANGE', k, '0', '31')
  if not ok then
    local t = redis.pcall('HMGET', k, 't', 'v')
    if type(t) == 'table' and not t.err and t[1] then
      if t[2] and #t[2] == 16 and find(t[2], '^%d+$') then had = t[2] end
    else
      bad = 'the key is not a string'
    end
  elseif h ~= '' then
    local m = sub(h, 1, 2)
    if #h < 32 or not find(sub(h, 3, 32), '^%d+$') or (m ~= '\255\2' and m ~= '\255\3') then
      bad = 'the value has no state-service header'
    else
      cur = sub(h, 3, 18)
    end
  end
  if bad then
    out[i] = {'F', 'INVALID_STORED_VALUE', '', bad}
  elseif cur and (policy == 'S' or (policy == 'N' and (ver == '' or ver <= cur))) then
    out[i] = {'S', cur}
  else
    local floor = cur or had
    local v = ver
    if v == '' then v = now end
    if floor and v <= floor then
      v = format('%016.0f', tonumber(floor) + 1)
      if now > v then v = now end
    end
    if sub(rec, 3, 18) ~= v then rec = sub(rec, 1, 2) .. v .. sub(rec, 19) end
    if exp == '' then
      redis.call('SET', k, rec)
    else
      redis.call('SET', k, rec, 'PXAT', exp)
    end
    out[i] = {'W', v}
  end
end
return out
"#;

/// A script with its shebang line first, as Redis requires.
fn script(shebang: &str, body: &str) -> Script {
    Script::new(&[shebang, "\n", body].concat())
}
