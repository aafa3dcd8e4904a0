-- wrk script: POST a two-slot OpenRTB request with a random country and device.
local countries = {"US","FR","DE","GB","JP","BR","IN","CA","AU","ES"}
local devices = {1, 2, 5}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{"id":"w%d-%d","imp":[{"id":"1","bidfloor":0.05},{"id":"2"}],"device":{"geo":{"country":"%s"},"devicetype":%d},"user":{"id":"u%d"},"site":{"id":"s"},"tmax":50}',
    math.random(1, 1000000000), n, countries[math.random(#countries)], devices[math.random(#devices)], math.random(1, 100000))
  return wrk.format(nil, "/v1/openrtb", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %d requests, non-2xx/3xx %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.requests, summary.errors.status))
end
