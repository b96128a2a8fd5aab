-- REST shaper: first HTTP filter, so on the way back it runs after the transcoder and ext_authz.
-- Request path: drops any client-sent x-cairn-principal, marks transcoded (non-gRPC) calls with x-cairn-rest: 1 so services render JSON.
-- Response path: applies the x-http-status / x-http-body a service attached to an error, and strips
-- gRPC plumbing headers from REST responses. Native gRPC calls pass through untouched.
local STRIP = {"x-http-body", "x-http-status", "grpc-status", "grpc-message",
               "grpc-status-details-bin", "grpc-accept-encoding", "x-envoy-upstream-service-time"}

-- The transcoder's messages for a query value it cannot parse name protobuf internals
-- ("for type TYPE_UINT64", synthetic oneof fields); clients get the same facts without them.
function without_internal_names(text)
  text = string.gsub(text, ": invalid value oneof field '[^']*' is already set%. Cannot set '[^']*' for type oneof",
                     "a query parameter was given more than once")
  return (string.gsub(text, " for type TYPE_[%u%d_]+", ""))
end

-- Headers gRPC metadata cannot carry (a key outside [0-9a-z_.-], a value with a byte outside
-- printable ASCII): HTTP allows them, but a gRPC server refuses the whole call for one of them.
-- They mean nothing to Cairn, so they are dropped before the transcoder forwards the call.
function unforwardable(headers)
  local names = {}
  for key, value in pairs(headers) do
    local bad_value = not string.find(key, "%-bin$") and string.find(value, "[^\032-\126]")
    if string.sub(key, 1, 1) ~= ":" and (string.find(key, "[^0-9a-z_.%-]") or bad_value) then
      names[#names + 1] = key
    end
  end
  return names
end

function envoy_on_request(handle)
  local headers = handle:headers()
  for _, key in ipairs(unforwardable(headers)) do headers:remove(key) end
  -- Only ext_authz (after this filter) may assert who the caller is.
  headers:remove("x-cairn-principal")
  -- The transcoder turns every REST call into a POST; the access log reports the client's method.
  headers:replace("x-cairn-method", headers:get(":method"))
  local ct = headers:get("content-type") or ""
  if string.sub(ct, 1, 16) == "application/grpc" then
    handle:streamInfo():dynamicMetadata():set("cairn.rest", "native_grpc", "1")
    headers:remove("x-cairn-rest")
  else
    headers:replace("x-cairn-rest", "1")
  end
end

function envoy_on_response(handle)
  local md = handle:streamInfo():dynamicMetadata():get("cairn.rest")
  if md ~= nil and md["native_grpc"] == "1" then return end
  local h = handle:headers()
  local body = h:get("x-http-body")
  local status = h:get("x-http-status")
  -- Every header edit happens before body(): the headers object is invalid after that yield.
  if status ~= nil then h:replace(":status", status) end
  if body ~= nil then h:replace("content-type", "application/json") end
  for _, k in ipairs(STRIP) do h:remove(k) end
  if body ~= nil then
    handle:body(true):setBytes(body)
    return
  end
  if status == nil and h:get("content-type") == "application/json" then
    -- An Envoy local reply (auth denial, bad JSON, unknown path, upstream down), already in the
    -- API's shape by local_reply_config, whose JSON formatter ends the body with a newline:
    -- drop it so these bodies are byte-for-byte what the services write.
    local b = handle:body(true)
    local n = b:length()
    if n > 0 then
      local text = b:getBytes(0, n)
      if string.sub(text, n) == "\n" then text = string.sub(text, 1, n - 1) end
      b:setBytes(without_internal_names(text))
    end
    return
  end
  if status == nil and h:get(":status") ~= "200" and h:get("content-type") == "application/grpc" then
    -- The error came in gRPC trailers (the service had already started a streamed reply).
    local b = handle:body(true)
    local t = handle:trailers()
    local tb = t and t:get("x-http-body")
    if tb ~= nil then
      b:setBytes(tb)
      local h2 = handle:headers()
      h2:replace("content-type", "application/json")
      local ts = t:get("x-http-status")
      if ts ~= nil then h2:replace(":status", ts) end
    end
  end
end
