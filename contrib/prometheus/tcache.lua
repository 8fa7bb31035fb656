#!lua flags=no-writes,allow-stale
-- tcache metrics for prometheus-redis-exporter (oliver006/redis_exporter,
-- tested with Debian's 1.45): run the exporter with
--   -script /path/to/contrib/prometheus/tcache.lua
-- The exporter sends this script with EVAL on every scrape and turns each
-- name/value pair of the reply into the gauge
--   redis_script_values{key="<name>"} <value>
-- (the prefix follows -namespace). See README.md beside this file.
--
-- The names are the fields of `INFO tcache`, unchanged:
--   section tcache_stats: tcache_hits, tcache_misses, ... one pair each;
--     tcache_hit_rate ("90.91%") is given without the % sign (90.91);
--   section tcache_cluster: the numbers; tcache_cluster_invalidation
--     (coordinated/local, a word) is left out, as any non-number;
--   section tcache_gates: one dict field per gate,
--     tcache_gate_<gate>:checked=N,rejected=M, given as the two pairs
--     tcache_gate_<gate>_checked and tcache_gate_<gate>_rejected.
-- Every value is passed on as the exact text INFO printed (a Lua number
-- would lose digits on the way to the reply). A value that is not a plain
-- decimal number is left out: the exporter drops the whole script reply,
-- and fails the scrape, when one value does not parse.
--
-- Read-only and keyless: it runs on primaries and replicas (also stale
-- ones: allow-stale), and under maxmemory (no-writes). Without the module
-- loaded, INFO tcache is empty and so is the reply.

local function number(text)
  text = string.gsub(text, '%%$', '')
  if string.match(text, '^%-?%d+%.?%d*$')
    or string.match(text, '^%-?%d+%.?%d*[eE][%+%-]?%d+$') then
    return text
  end
  return nil
end

local out = {}
local function add(name, text)
  local value = number(text)
  if value then
    out[#out + 1] = name
    out[#out + 1] = value
  end
end

local info = redis.call('INFO', 'tcache')
for line in string.gmatch(info, '[^\r\n]+') do
  local name, text = string.match(line, '^(tcache_[^:]+):(.*)$')
  if name then
    if string.find(text, '=', 1, true) then
      -- a dict field: tcache_gate_<gate>:checked=N,rejected=M
      for sub, v in string.gmatch(text, '([^,=]+)=([^,]*)') do
        add(name .. '_' .. sub, v)
      end
    else
      add(name, text)
    end
  end
end
return out
