-- wrk script: a ping per request, each for a caller never seen before.
-- Every wrk thread numbers its callers in its own range.
local threads = 0

function setup(thread)
  thread:set("first", 2000000000 + threads * 100000000)
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
