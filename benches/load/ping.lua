-- wrk script: a ping per request, each for a caller never seen before.
-- Every wrk thread numbers its callers in its own range of 100 million, and
-- every run starts at its own place in it, set by the clock: 2.5 million
-- numbers further for each second, so runs started less than 40 s apart
-- never ping the same caller (a run restarting at the same numbers would
-- meet the last run's reservations and records, and measure that).
local threads = 0
local from = (os.time() % 40) * 2500000

function setup(thread)
  thread:set("first", 2000000000 + threads * 100000000 + from)
  threads = threads + 1
end

function init(args)
  n = 0
  key = os.getenv("RTBD_KEY") or "bench-key"
end

function request()
  n = n + 1
  local caller = first + n
  return wrk.format("POST", "/rtbs.json?key=" .. key .. "&publisher_id=pub1&caller_number=%2B1" .. caller .. "&caller_zip=10001&caller_state=NY")
end
