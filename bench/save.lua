-- wrk script for the screening-form save (POST). Every request is a real save:
--
-- * each request targets a different subject's screening form, and carries that
--   form's current version (optimistic locking refuses a stale one: 200 + conflict
--   message, no write);
-- * the two wrk threads take disjoint halves of the targets, so two in-flight
--   requests never hit the same form; after one pass over its half (~1,000 forms), a
--   thread starts again with every version + 1 (its previous save of that form was
--   sent ~1,000 requests earlier; at most 4 are in flight per thread);
-- * weight_kg flips between two values on each pass (starting with the one the form
--   does not hold), so every save changes one field (the subjects' screening dates
--   differ: each request carries its form's own, unchanged),
--   and the form is complete, so the body carries a reason for the change.
--
--   wrk -t2 -c8 -d10s -s bench/save.lua URL -- <targets.lua> <threads>
--
-- targets.lua (written by bench/run.py) defines:
--   targets = { {subject_id, version, w, own}, ... }  (w = 1 when the form already holds weights[1];
--             own = "&k=v..." the form's own answers of the fields that differ between subjects)
--   body = "<urlencoded form minus version, weight and those fields>"
--   weights = { "70", "62.5" }
-- A successful save answers 302 (redirect to the saved form); anything else is counted.

local threads = {}
local nthreads = 0

function setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
   table.insert(threads, thread)
end

function init(args)
   dofile(args[1])
   mine = {}
   local n = tonumber(args[2]) or 2  -- the -t value (setup() runs before all threads exist)
   for i, t in ipairs(targets) do
      if (i - 1) % n == tid then table.insert(mine, t) end
   end
   counter = 0
   verified = false
   ok = 0
   bad = 0
   bad_status = 0
   bad_note = ""
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
   if tid == 0 and not verified then
      -- wrk calls request() once in thread 0 before the run, only to check that it
      -- parses (script_verify_request); that request is never sent, so it must not
      -- consume a target (its form would then be one version behind on the next pass).
      verified = true
      local t = mine[1]
      return wrk.format("POST", "/subjects/" .. t[1] .. "/screening", nil, body .. (t[4] or ""))
   end
   local k = counter % #mine
   local pass = math.floor(counter / #mine)
   counter = counter + 1
   local t = mine[k + 1]
   local path = "/subjects/" .. t[1] .. "/screening"
   local b = body .. (t[4] or "") .. "&version=" .. (t[2] + pass) .. "&weight_kg=" .. weights[((pass + t[3]) % 2) + 1]
   return wrk.format("POST", path, nil, b)
end

function response(status, headers, body)
   if status == 302 then
      ok = ok + 1
   else
      bad = bad + 1
      bad_status = status
      bad_note = string.match(body, 'role="alert">%s*([^<]*)') or string.sub(body, 1, 80)
   end
end

function done(summary, latency, requests)
   local good, wrong, last, note, generated = 0, 0, 0, "", 0
   for _, t in ipairs(threads) do
      generated = generated + t:get("counter")
      good = good + t:get("ok")
      wrong = wrong + t:get("bad")
      if t:get("bad_status") ~= 0 then
         last = t:get("bad_status")
         note = t:get("bad_note")
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
      '"ok": %d, "bad": %d, "bad_status": %d, "err_connect": %d, "err_read": %d, "err_write": %d, ' ..
      '"err_status": %d, "err_timeout": %d, "generated": %d, "bad_note": "%s"}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, good, wrong, last, e.connect, e.read, e.write, e.status, e.timeout, generated,
      (string.gsub(note, '[%c"\\]', " "))))
end
