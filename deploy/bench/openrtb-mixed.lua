-- wrk script: POST what exchanges send (bench --serving's mixed kind): a banner, video, native or
-- audio imp plus a 728x90 banner, an alpha-3 country, and bcat/badv block lists.
-- Seed the catalog first: adstream bench --freshness PIPELINE.toml --seed-campaigns N
local countries = {"USA","FRA","DEU","GBR","JPN","BRA","IND","CAN","AUS","ESP"}
local devices = {4, 2, 5}
local native = '{\\"ver\\":\\"1.2\\",\\"assets\\":[{\\"id\\":1,\\"required\\":1,\\"title\\":{\\"len\\":90}},{\\"id\\":2,\\"required\\":1,\\"img\\":{\\"type\\":3,\\"wmin\\":600,\\"hmin\\":314}},{\\"id\\":3,\\"data\\":{\\"type\\":1}}]}'
local imps = {
  '{"id":"1","bidfloor":0.05,"banner":{"w":300,"h":250,"format":[{"w":300,"h":250},{"w":320,"h":50}]}}',
  '{"id":"1","bidfloor":0.05,"video":{"mimes":["video/mp4","video/webm"],"minduration":5,"maxduration":30,"protocols":[2,3,5,6],"w":640,"h":480}}',
  '{"id":"1","bidfloor":0.05,"native":{"request":"' .. native .. '","ver":"1.2"}}',
  '{"id":"1","bidfloor":0.05,"audio":{"mimes":["audio/mpeg"],"maxduration":60}}',
}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{"id":"m%d-%d","imp":[%s,{"id":"2","banner":{"w":728,"h":90}}],"device":{"geo":{"country":"%s"},"devicetype":%d},"user":{"id":"u%d"},"site":{"id":"s"},"tmax":50,"bcat":["IAB%d","IAB25","IAB26"],"badv":["brand%d.example","brand%d.example","casino.example"]}',
    math.random(1, 1000000000), n, imps[math.random(#imps)], countries[math.random(#countries)],
    devices[math.random(#devices)], math.random(1, 100000), math.random(1, 26), math.random(0, 499), math.random(0, 499))
  return wrk.format(nil, "/v1/openrtb", nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %d requests, non-2xx/3xx %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.requests, summary.errors.status))
end
