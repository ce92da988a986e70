-- wrk script for the GET pages: cycles through a list of paths (optional) and checks
-- every response: the expected status and a marker text that only the real page has
-- (a session problem would answer 302 to /login, which wrk alone counts as success).
--
--   wrk -t2 -c8 -d10s -s bench/get.lua URL -- <status> <marker> [paths-file]
--
-- done() prints one line "BENCH {json}" with requests, duration, latency percentiles
-- (microseconds) and the number of unexpected responses.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   expected = tonumber(args[1]) or 200
   marker = args[2]
   if marker == "" then marker = nil end
   paths = {}
   if args[3] and args[3] ~= "" then
      for line in io.lines(args[3]) do
         if line ~= "" then table.insert(paths, line) end
      end
   end
   counter = 0
   ok = 0
   bad = 0
   bad_status = 0
end

function request()
   if #paths > 0 then
      counter = counter + 1
      return wrk.format(nil, paths[(counter % #paths) + 1])
   end
   return wrk.format(nil)
end

function response(status, headers, body)
   if status ~= expected then
      bad = bad + 1
      bad_status = status
   elseif marker and not string.find(body, marker, 1, true) then
      bad = bad + 1
      bad_status = -1
   else
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local good, wrong, last = 0, 0, 0
   for _, t in ipairs(threads) do
      good = good + t:get("ok")
      wrong = wrong + t:get("bad")
      if t:get("bad_status") ~= 0 then last = t:get("bad_status") end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
      '"ok": %d, "bad": %d, "bad_status": %d, "err_connect": %d, "err_read": %d, "err_write": %d, ' ..
      '"err_status": %d, "err_timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, good, wrong, last, e.connect, e.read, e.write, e.status, e.timeout))
end
