-- wrk script: POST the requests prepared by benchmarks/serving.py (or peers.py), in turn, on every
-- connection.
-- WRK_REQUESTS_DIR holds body_N (the request body) and type_N (its Content-Type), N = 0, 1, ...,
-- and optionally headers_N (more headers, a "Name: value" line each);
-- WRK_PATH is the path to post to. done() prints one JSON line for serving.py to read.
local dir = os.getenv("WRK_REQUESTS_DIR")
local path = os.getenv("WRK_PATH") or "/predict"
local requests = {}

local function read(name)
  local f = io.open(dir .. "/" .. name, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local i = 0
while true do
  local body = read("body_" .. i)
  if not body then break end
  local headers = { ["Content-Type"] = read("type_" .. i) }
  for line in (read("headers_" .. i) or ""):gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if not name then error("headers_" .. i .. ": not a 'Name: value' line: " .. line) end
    headers[name] = value
  end
  requests[#requests + 1] = wrk.format("POST", path, headers, body)
  i = i + 1
end

local counter = 0

function init(args)
  counter = math.random(#requests)
end

function request()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end

-- (No response() callback: wrk then skips handing bodies to Lua and stays cheap; it counts
-- statuses >= 400 itself, in summary.errors.status.)
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
