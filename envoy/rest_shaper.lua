-- REST shaper: first HTTP filter, so on the way back it runs after the transcoder and ext_authz.
-- Request path: drops any client-sent x-cairn-principal and every header a gRPC service could not
-- receive, marks transcoded (non-gRPC) calls with x-cairn-rest: 1 so services render JSON.
-- Response path: applies the x-http-status / x-http-body a service attached to an error, gives
-- the API's shape to a gRPC failure that arrived without one, and strips gRPC plumbing headers
-- from REST responses. Native gRPC calls pass through untouched.
local STRIP = {"x-http-body", "x-http-status", "grpc-status", "grpc-message",
               "grpc-status-details-bin", "grpc-accept-encoding", "x-envoy-upstream-service-time"}

-- The transcoder's messages for a query value it cannot parse name protobuf internals
-- ("for type TYPE_UINT64", synthetic oneof fields); clients get the same facts without them.
function without_internal_names(text)
  text = string.gsub(text, ": invalid value oneof field '[^']*' is already set%. Cannot set '[^']*' for type oneof",
                     "a query parameter was given more than once")
  return (string.gsub(text, " for type TYPE_[%u%d_]+", ""))
end

-- Envoy passes request headers on as gRPC metadata, whose keys are lowercase letters, digits,
-- "_", "-" and "." and whose values are printable ASCII; a service's gRPC runtime fails the whole
-- call (500 "Illegal header key") on anything else. No Cairn API reads such a header. A REST
-- client's grpc-* headers go too: gRPC's own controls (grpc-timeout: 1n would make any call a
-- 504) are for gRPC clients.
function drop_headers_grpc_cannot_carry(headers, rest)
  local doomed = {}
  for key, value in pairs(headers) do
    if string.sub(key, 1, 1) ~= ":" and
        (string.find(key, "[^%l%d_.%-]") or string.find(value, "[^\32-\126]") or
         (rest and string.sub(key, 1, 5) == "grpc-")) then
      doomed[#doomed + 1] = key
    end
  end
  for _, key in ipairs(doomed) do headers:remove(key) end
end

-- Statuses for a gRPC failure that reached the transcoder without a Cairn error body: it failed
-- in gRPC itself (a message over the size limit, a service going away), before Cairn code ran.
local GRPC_FAILURES = {
  [1] = {499, "Request cancelled"},
  [4] = {504, "Upstream request timeout"},
  [8] = {413, "Request too large"},
  [12] = {501, "Not implemented"},
  [14] = {503, "Service unavailable"},
}

function json_string(text)
  return '"' .. string.gsub(text, '["\\]', '\\%0') .. '"'
end

-- The transcoder's {"code":N,"message":...} as the API family's error body (route metadata
-- `family: ledger` marks the DAML JSON API's routes).
function api_error(handle, text)
  local code = tonumber(string.match(text, '^{"code":(%d+)'))
  local failure = GRPC_FAILURES[code] or {500, "Internal server error"}
  local status, message = failure[1], failure[2]
  local size, limit = string.match(text, "larger than max %((%d+) vs%. (%d+)%)")
  if code == 8 and size ~= nil then
    message = "Request too large: the request is " .. size .. " bytes (limit: " .. limit .. ")"
  end
  if handle:metadata():get("family") == "ledger" then
    return status, '{"status":' .. status .. ',"errors":[' .. json_string(message) .. ']}'
  elseif status == 400 then
    return status, '{"errors":[' .. json_string(message) .. ']}'
  end
  return status, '{"error":' .. json_string(message) .. '}'
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local ct = headers:get("content-type") or ""
  local native = string.sub(ct, 1, 16) == "application/grpc"
  drop_headers_grpc_cannot_carry(headers, not native)
  -- Only ext_authz (after this filter) may assert who the caller is.
  headers:remove("x-cairn-principal")
  -- The transcoder turns every REST call into a POST; the access log reports the client's method.
  headers:replace("x-cairn-method", headers:get(":method"))
  if native then
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
    -- drop it so these bodies are byte-for-byte what the services write. Or a gRPC failure the
    -- transcoder printed as {"code":N,...}: that gets the API's shape here.
    local b = handle:body(true)
    local n = b:length()
    if n > 0 then
      local text = b:getBytes(0, n)
      if string.sub(text, 1, 8) == '{"code":' then
        local failed, shaped = api_error(handle, text)
        b:setBytes(shaped)
        handle:headers():replace(":status", tostring(failed))
        return
      end
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
