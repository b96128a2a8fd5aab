"""The ledger's state in Redis: active contracts, the key index, offsets, parties and packages.

Every transaction commits in one Lua script call, which first re-checks what the transaction
relied on (its input contracts are still active, the contract keys it saw still map to what it
saw, new keys are still free, its command id is new) and only then applies it, so any number of
ledger-service replicas can interpret commands concurrently against one Redis and never commit
two contracts under one key. Each commit takes the next ledger offset and is published on the
`<prefix>:transactions` channel.

Keys (prefix `cairn:ledger`):
  offset                       INCR counter, the last ledger offset
  c:<cid>                      an active contract (StoredContract record JSON)
  acs:<template id>            ZSET of active contract ids of a template, scored by offset
  vis:<party>                  ZSET of active contract ids the party is a stakeholder of
  vis:<party>:<template id>    the same, per template
  key:<template id>:<hash>     the active contract id holding that key
  cmd:<sha256>                 command deduplication marker (expires)
  parties                      HASH party id -> {"displayName"?}
  packages                     ZSET package ids, scored by upload time
  package-dar                  HASH package id -> blob key of the DAR that brought it
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from cairn.ledger.model import Commit, Party, StoredContract

OFFSET_WIDTH = 20  # offsets are zero-padded so that they also order as strings
DEDUP_TTL_SECONDS = 24 * 3600

_COMMIT = """
local spec = cjson.decode(ARGV[1])
-- 1. Re-check every input of the transaction; nothing is written before all checks pass
-- (a Lua script is atomic but not rolled back on error).
if spec.dedup > 0 and redis.call('EXISTS', KEYS[spec.dedup]) == 1 then
  return {'duplicate-command', redis.call('GET', KEYS[spec.dedup])}
end
for _, i in ipairs(spec.inputs) do
  if redis.call('EXISTS', KEYS[i[1]]) == 0 then return {'inactive', i[2]} end
end
for _, a in ipairs(spec.archive) do
  if redis.call('EXISTS', KEYS[a.c]) == 0 then return {'inactive', a.cid} end
end
for _, e in ipairs(spec.keys) do
  local holder = redis.call('GET', KEYS[e[1]])
  if e[2] == cjson.null then
    if holder then return {'key-taken', e[3]} end
  elseif holder ~= e[2] then
    return {'key-changed', e[3]}
  end
end
-- 2. Apply: archives first, so a key released here may be taken by a create below.
local n = redis.call('INCR', KEYS[1])
local offset = string.format('%0' .. spec.width .. 'd', n)
for _, a in ipairs(spec.archive) do
  redis.call('DEL', KEYS[a.c])
  for _, i in ipairs(a.idx) do redis.call('ZREM', KEYS[i], a.cid) end
  if a.slot > 0 and redis.call('GET', KEYS[a.slot]) == a.cid then
    redis.call('DEL', KEYS[a.slot])
  end
end
for _, c in ipairs(spec.create) do
  if c.slot > 0 then redis.call('SET', KEYS[c.slot], c.cid) end
  redis.call('SET', KEYS[c.c], c.body)
  for _, i in ipairs(c.idx) do redis.call('ZADD', KEYS[i], n, c.cid) end
end
for _, p in ipairs(spec.parties) do redis.call('HSETNX', KEYS[2], p, '{}') end
if spec.dedup > 0 then redis.call('SET', KEYS[spec.dedup], offset, 'EX', spec.ttl) end
-- ARGV[2] is the event JSON without its offset (cjson would print empty arrays as {}).
redis.call('PUBLISH', spec.channel, '{"offset":"' .. offset .. '",' .. string.sub(ARGV[2], 2))
return {'ok', offset}
"""

# The active contracts listed in the index sets KEYS, oldest first, as one JSON array: a single
# reply instead of one element per contract (which redis-py parses slowly), read atomically.
_VISIBLE = """
local score, order = {}, {}
for _, index in ipairs(KEYS) do
  local members = redis.call('ZRANGE', index, 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local cid = members[i]
    if not score[cid] then
      score[cid] = tonumber(members[i + 1])
      order[#order + 1] = cid
    end
  end
end
if #KEYS > 1 then
  table.sort(order, function(a, b)
    if score[a] ~= score[b] then return score[a] < score[b] end
    return a < b
  end)
end
local bodies = {}
for _, cid in ipairs(order) do
  local body = redis.call('GET', ARGV[1] .. cid)
  if body then bodies[#bodies + 1] = body end
end
return '[' .. table.concat(bodies, ',') .. ']'
"""

# Add a party only if it is new; answers 1 when added.
_ALLOCATE = "return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])"


class CommitRejected(Exception):
    """The transaction's inputs changed before it could commit; `reason` says which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Committed:
    offset: str


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class LedgerStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "cairn:ledger") -> None:
        self._r = redis
        self._p = prefix
        self._commit = redis.register_script(_COMMIT)
        self._allocate = redis.register_script(_ALLOCATE)
        self._visible_script = redis.register_script(_VISIBLE)

    @property
    def channel(self) -> str:
        """Where every commit is published: `{"offset","created","archived","commandId"?}`."""
        return f"{self._p}:transactions"

    # ------------------------------------------------------------------ key names
    def _contract(self, cid: str) -> str:
        return f"{self._p}:c:{cid}"

    def _acs(self, template_id: str) -> str:
        return f"{self._p}:acs:{template_id}"

    def _visible(self, party: str, template_id: str | None = None) -> str:
        return f"{self._p}:vis:{party}" + (f":{template_id}" if template_id else "")

    def _key_slot(self, template_id: str, slot: str) -> str:
        return f"{self._p}:key:{template_id}:{slot}"

    def _indexes(self, contract: StoredContract) -> list[str]:
        names = [self._acs(contract.template_id)]
        for party in sorted(contract.stakeholders):
            names += [self._visible(party), self._visible(party, contract.template_id)]
        return names

    @staticmethod
    def _command_digest(command: tuple[str, tuple[str, ...], str]) -> str:
        application, parties, command_id = command
        text = json.dumps([application, sorted(parties), command_id])
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ commits
    async def commit(self, commit: Commit) -> Committed:
        """Apply the transaction atomically, or raise CommitRejected and change nothing."""
        keys: list[str] = [f"{self._p}:offset", f"{self._p}:parties"]
        positions: dict[str, int] = {}

        def ref(name: str) -> int:
            """The 1-based KEYS index of a Redis key, each key declared once."""
            if name not in positions:
                keys.append(name)
                positions[name] = len(keys)
            return positions[name]

        dedup = 0
        if commit.command is not None:
            dedup = ref(f"{self._p}:cmd:{self._command_digest(commit.command)}")
        archive = [
            {
                "c": ref(self._contract(c.contract_id)),
                "idx": [ref(name) for name in self._indexes(c)],
                "cid": c.contract_id,
                "slot": ref(self._key_slot(c.template_id, c.key_slot)) if c.key_slot else 0,
            }
            for c in commit.archived
        ]
        archived_ids = {c.contract_id for c in commit.archived}
        inputs = [[ref(self._contract(cid)), cid]
                  for cid in commit.inputs if cid not in archived_ids]
        expectations: list[list[int | str | None]] = []
        for template_id, key_slot, seen in commit.key_expectations:
            expectations.append([ref(self._key_slot(template_id, key_slot)), seen, template_id])
        create = []
        for c in commit.created:
            slot = 0
            if c.key_slot:
                slot = ref(self._key_slot(c.template_id, c.key_slot))
                if not any(a["slot"] == slot for a in archive):
                    # A new key must be free unless this transaction archives its holder.
                    expectations.append([slot, None, c.template_id])
            create.append({
                "c": ref(self._contract(c.contract_id)),
                "idx": [ref(name) for name in self._indexes(c)],
                "cid": c.contract_id,
                "body": c.to_record(),
                "slot": slot,
            })
        parties = sorted({p for c in commit.created for p in c.stakeholders})
        event: dict[str, Any] = {
            "created": [c.contract_id for c in commit.created],
            "archived": [[c.contract_id, c.template_id] for c in commit.archived],
        }
        if commit.command is not None:
            event["commandId"] = commit.command[2]
        spec = {
            "dedup": dedup,
            "ttl": DEDUP_TTL_SECONDS,
            "width": OFFSET_WIDTH,
            "inputs": inputs,
            "keys": expectations,
            "archive": archive,
            "create": create,
            "parties": parties,
            "channel": self.channel,
        }
        reply = await self._commit(
            keys=keys,
            args=[json.dumps(spec, ensure_ascii=False), json.dumps(event, ensure_ascii=False)],
        )
        status, detail = (_text(part) for part in reply)
        if status != "ok":
            raise CommitRejected(status, detail)
        return Committed(detail)

    async def ledger_end(self) -> str | None:
        """The offset of the last commit, or None on an empty ledger."""
        raw = await self._r.get(f"{self._p}:offset")
        return None if raw is None else str(int(raw)).zfill(OFFSET_WIDTH)

    # ------------------------------------------------------------------ contract reads
    async def contract(self, contract_id: str) -> StoredContract | None:
        raw = await self._r.get(self._contract(contract_id))
        return None if raw is None else StoredContract.from_record(raw)

    async def contract_by_key(self, template_id: str, key_slot: str) -> StoredContract | None:
        """The active contract holding the key with this `key_hash` slot, if any."""
        cid = await self.key_holder(template_id, key_slot)
        return None if cid is None else await self.contract(cid)

    async def key_holder(self, template_id: str, key_slot: str) -> str | None:
        """The id of the active contract holding the key with this `key_hash` slot, if any."""
        cid = await self._r.get(self._key_slot(template_id, key_slot))
        return None if cid is None else _text(cid)

    async def visible_contracts(
        self,
        parties: Iterable[str],
        template_ids: Sequence[str] | None = None,
        where: Callable[[str, Any], bool] | None = None,
    ) -> list[StoredContract]:
        """Active contracts any of `parties` is a stakeholder of, oldest first; all templates
        when `template_ids` is None; only those whose (template id, LF JSON payload) satisfy
        `where`, tested before any record object is built."""
        index_names = [
            self._visible(party, template_id)
            for party in sorted(set(parties))
            for template_id in (template_ids if template_ids is not None else [None])
        ]
        if not index_names:
            return []
        # Contract keys are derived inside the script from the declared index keys (one Redis,
        # not a cluster), so one call returns a consistent snapshot.
        raw = await self._visible_script(keys=index_names, args=[self._contract("")])
        records = json.loads(raw)
        if where is not None:
            records = [r for r in records if where(r["tid"], r["payload"])]
        return [StoredContract.from_data(r) for r in records]

    # ------------------------------------------------------------------ parties
    async def parties(self) -> list[Party]:
        entries = await self._r.hgetall(f"{self._p}:parties")
        parties = [Party.from_record(_text(k), v) for k, v in entries.items()]
        return sorted(parties, key=lambda p: p.identifier)

    async def parties_by_id(self, identifiers: Sequence[str]) -> dict[str, Party]:
        if not identifiers:
            return {}
        raws = await self._r.hmget(f"{self._p}:parties", list(identifiers))
        return {
            identifier: Party.from_record(identifier, raw)
            for identifier, raw in zip(identifiers, raws, strict=True)
            if raw is not None
        }

    async def allocate_party(self, party: Party) -> bool:
        """Add the party; False when a party with that identifier already exists."""
        added = await self._allocate(keys=[f"{self._p}:parties"],
                                     args=[party.identifier, party.to_record()])
        return bool(added)

    # ------------------------------------------------------------------ packages
    async def add_packages(self, dar_blob_key: str, package_ids: Sequence[str]) -> None:
        """Index the packages of a stored DAR; packages already known keep their first DAR."""
        now = time.time()
        async with self._r.pipeline(transaction=True) as tx:
            for package_id in package_ids:
                tx.hsetnx(f"{self._p}:package-dar", package_id, dar_blob_key)
            tx.zadd(f"{self._p}:packages", dict.fromkeys(package_ids, now), nx=True)
            await tx.execute()

    async def package_ids(self) -> list[str]:
        members: Any = await self._r.zrange(f"{self._p}:packages", 0, -1)
        return [_text(m) for m in members]

    async def dar_of(self, package_id: str) -> str | None:
        raw = await self._r.hget(f"{self._p}:package-dar", package_id)
        return None if raw is None else _text(raw)

    async def dars_of(self, package_ids: Sequence[str]) -> dict[str, str]:
        if not package_ids:
            return {}
        raws = await self._r.hmget(f"{self._p}:package-dar", list(package_ids))
        return {p: _text(r) for p, r in zip(package_ids, raws, strict=True) if r is not None}
