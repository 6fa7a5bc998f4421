-- wrk script for bench/wrkdriver.py: replays pre-signed webhook deliveries, one per request.
--
-- The request file (env BENCH_WRK_REQUESTS) has one delivery per line: "<hex signature> <body>"
-- (compact JSON has no raw newline). It is read lazily, a line per request, so wrk starts
-- at once whatever the file's size; at its end the file is read again from the top (counted
-- in "wrapped": those requests are redeliveries). Run with one thread (-t1). Every status code
-- and every "outcome" named in a response body is counted.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  path = os.getenv("BENCH_WRK_REQUESTS")
  url_path = os.getenv("BENCH_WRK_PATH") or "/webhooks/analysis"
  file = assert(io.open(path, "rb"))
  wrapped = 0
  statuses = {}
  outcomes = {}
end

function request()
  local line = file:read("*l")
  if line == nil then
    file:close()
    file = assert(io.open(path, "rb"))
    wrapped = wrapped + 1
    line = file:read("*l")
  end
  local space = string.find(line, " ", 1, true)
  return wrk.format("POST", url_path, {
    ["Content-Type"] = "application/json",
    ["X-Webhook-Signature"] = string.sub(line, 1, space - 1),
  }, string.sub(line, space + 1))
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if body ~= nil then
    local outcome = string.match(body, '"outcome":"(%w+)"')
    if outcome ~= nil then
      outcomes[outcome] = (outcomes[outcome] or 0) + 1
    end
  end
end

local function object(t)
  local items = {}
  for k, v in pairs(t) do items[#items + 1] = string.format('"%s":%d', k, v) end
  return "{" .. table.concat(items, ",") .. "}"
end

function done(summary, latency, requests_)
  local all_statuses, all_outcomes, all_wrapped = {}, {}, 0
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("statuses")) do all_statuses[k] = (all_statuses[k] or 0) + v end
    for k, v in pairs(thread:get("outcomes")) do all_outcomes[k] = (all_outcomes[k] or 0) + v end
    all_wrapped = all_wrapped + thread:get("wrapped")
  end
  io.write(string.format(
    'BENCH_WRK_JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,' ..
    '"max":%d,"mean":%f},"statuses":%s,"outcomes":%s,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, object(all_statuses), object(all_outcomes), all_wrapped))
end
