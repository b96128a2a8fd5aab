"""The ledger's state in Redis: the transaction log, the active contracts, the key index,
offsets, parties and packages.

A DAML ledger is an ordered transaction log with the active contract set (ACS) as a projection
of it. Every transaction commits in one Lua script call, which first re-checks what the
transaction relied on (its input contracts are still active, the contract keys it saw still map
to what it saw, new keys are still free, its command id is not a duplicate) and only then takes
the next offset, updates the ACS and the key index, appends the transaction to the log and
publishes it. So the log and the ACS never disagree, and any number of ledger-service replicas
can interpret commands concurrently against one Redis and never commit two contracts under one
key.

Every key shares the hash tag `{ledger}`, so each script touches one Redis Cluster slot.
Keys (prefix `cairn:{ledger}`):
  offset                 INCR counter, the last ledger offset (the ledger end)
  acs                    HASH contract id -> `<creation offset><key slot>\\n<contract JSON>`
  keys                   HASH `<template id>:<key slot>` -> the active contract holding that key
  log                    STREAM, one entry per transaction, id `<offset>-0`, field `t` (below)
  pruned                 the pruning offset: the log holds every transaction after it
  cmd:<sha256>           command deduplication marker `<offset>:<commit time ms>` (expires)
  parties                HASH party id -> {"displayName"?}
  packages               ZSET package ids, scored by upload time
  package-dar            HASH package id -> blob key of the DAR that brought it
  transactions           the pub/sub channel every log entry is also published on

A log entry (and the published message) is newline-separated text, newline being the one
character compact JSON never contains raw:
  {"offset":"<20 digits>","time":<ms>,"commandId":…,"submissionId"?:…,
   "created":[[cid,slot|null],…],"archived":[[cid,slot|null],…]}
  one line per created contract: its JSON (the JSON API's active contract object)
  one line per archived contract: its JSON as it was stored
Offsets are decimal, zero-padded to 20 digits, so they order as strings as well as numbers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from cairn.ledger import metrics
from cairn.ledger.model import Commit, ContractRow, Party, StoredContract, compact

PREFIX = "cairn:{ledger}"
OFFSET_WIDTH = 20  # offsets are zero-padded so that they also order as strings
DEFAULT_MAX_DEDUPLICATION_SECONDS = 24 * 3600

_COMMIT = """
local spec = cjson.decode(ARGV[1])
local acs, keys = KEYS[3], KEYS[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- 1. Re-check every input of the transaction; nothing is written before all checks pass
-- (a Lua script is atomic but not rolled back on error).
if spec.dedup > 0 then
  local marker = redis.call('GET', KEYS[spec.dedup])
  if marker then
    local sep = string.find(marker, ':', 1, true)
    local seen_offset, seen_at = marker, now
    if sep then
      seen_offset, seen_at = string.sub(marker, 1, sep - 1), tonumber(string.sub(marker, sep + 1))
    end
    local duplicate
    if spec.after ~= '' then duplicate = seen_offset > spec.after
    else duplicate = now - seen_at < spec.window end
    if duplicate then return {'duplicate-command', seen_offset} end
  end
end
for _, cid in ipairs(spec.inputs) do
  if redis.call('HEXISTS', acs, cid) == 0 then return {'inactive', cid} end
end
for _, a in ipairs(spec.archive) do
  if redis.call('HEXISTS', acs, a[1]) == 0 then return {'inactive', a[1]} end
end
for _, e in ipairs(spec.keys) do
  local holder = redis.call('HGET', keys, e[1])
  if e[2] == '' then
    if holder then return {'key-taken', e[3]} end
  elseif holder ~= e[2] then
    return {'key-changed', e[3]}
  end
end
-- 2. Apply: archives first, so a key released here may be taken by a create below.
local n = redis.call('INCR', KEYS[1])
local offset = string.format('%0' .. spec.width .. 'd', n)
local lines = {'{"offset":"' .. offset .. '","time":' .. now .. ',' .. string.sub(ARGV[2], 2)}
for i = 3, #ARGV do lines[#lines + 1] = ARGV[i] end
for _, a in ipairs(spec.archive) do
  local stored = redis.call('HGET', acs, a[1])
  lines[#lines + 1] = string.sub(stored, string.find(stored, '\\n', 1, true) + 1)
  redis.call('HDEL', acs, a[1])
  if a[2] ~= '' and redis.call('HGET', keys, a[2]) == a[1] then redis.call('HDEL', keys, a[2]) end
end
for i, c in ipairs(spec.create) do
  if c[2] ~= '' then redis.call('HSET', keys, c[2], c[1]) end
  redis.call('HSET', acs, c[1], offset .. c[3] .. '\\n' .. ARGV[2 + i])
end
for _, p in ipairs(spec.parties) do redis.call('HSETNX', KEYS[2], p, '{}') end
if spec.dedup > 0 then
  redis.call('SET', KEYS[spec.dedup], offset .. ':' .. now, 'PX', spec.ttl)
end
local entry = table.concat(lines, '\\n')
redis.call('XADD', KEYS[5], n .. '-0', 't', entry)
redis.call('PUBLISH', spec.channel, entry)
return {'ok', offset}
"""

# Drop log entries beyond the retention (ARGV: max entries, oldest commit time to keep in ms,
# each 0 for no limit) and record the pruning offset, which never goes back.
_PRUNE = """
local log, pruned, ending = KEYS[1], KEYS[2], KEYS[3]
local max_count, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
if max_count > 0 then redis.call('XTRIM', log, 'MAXLEN', max_count) end
if cutoff > 0 then
  while true do
    local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 200)
    if #oldest == 0 then break end
    local keep = nil
    for _, e in ipairs(oldest) do
      if tonumber(string.match(e[2][2], '"time":(%d+)')) >= cutoff then keep = e[1]; break end
    end
    if keep then redis.call('XTRIM', log, 'MINID', keep); break end
    local last = oldest[#oldest][1]
    redis.call('XTRIM', log, 'MINID', (tonumber(string.match(last, '^(%d+)')) + 1) .. '-0')
  end
end
local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
local now_pruned
if #first > 0 then
  now_pruned = tonumber(string.match(first[1][1], '^(%d+)')) - 1
else
  now_pruned = tonumber(redis.call('GET', ending) or '0')
end
local before = tonumber(redis.call('GET', pruned) or '0')
if now_pruned > before then
  redis.call('SET', pruned, now_pruned)
  return now_pruned
end
return before
"""

# One HSCAN step over the ACS, its values joined by newlines into one reply (one element for
# redis-py to parse instead of two per contract). Each value is `<head>\\n<contract JSON>`.
_SCAN_ACS = """
local step = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local values = {}
for i = 2, #step[2], 2 do values[#values + 1] = step[2][i] end
return {step[1], table.concat(values, '\\n')}
"""

# Add a party only if it is new; answers 1 when added.
_ALLOCATE = "return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])"


class CommitRejected(Exception):
    """The transaction's inputs changed before it could commit; `reason` says which."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class HistoryPruned(Exception):
    """The log no longer holds the transactions right after the requested offset."""

    def __init__(self, pruned: int) -> None:
        super().__init__(f"the log starts after offset {pruned}")
        self.pruned = pruned


@dataclass(frozen=True)
class Committed:
    offset: str


@dataclass(frozen=True)
class LoggedTransaction:
    """One log entry, parsed: the contracts it created and archived, in the stored form."""

    offset: int
    command_id: str | None
    created: tuple[ContractRow, ...]
    archived: tuple[ContractRow, ...]

    @property
    def offset_text(self) -> str:
        return format_offset(self.offset)


def format_offset(offset: int) -> str:
    return str(offset).zfill(OFFSET_WIDTH)


def parse_entry(raw: bytes | str) -> LoggedTransaction:
    """A log entry or published message (see the module docstring)."""
    lines = (raw.decode() if isinstance(raw, bytes) else raw).split("\n")
    header = json.loads(lines[0])
    offset = int(header["offset"])
    creates, archives = header["created"], header["archived"]
    created = tuple(ContractRow.parse(text, offset, slot)
                    for text, (_, slot) in zip(lines[1:1 + len(creates)], creates, strict=True))
    archived = tuple(ContractRow.parse(text, 0, slot)
                     for text, (_, slot) in zip(lines[1 + len(creates):], archives, strict=True))
    return LoggedTransaction(offset, header.get("commandId"), created, archived)


def parse_stored(raw: bytes | str, data: dict[str, Any] | None = None) -> ContractRow:
    """A value of the `acs` hash: `<offset><key slot>\\n<contract JSON>`."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    head, _, body = text.partition("\n")
    return ContractRow.parse(body, int(head[:OFFSET_WIDTH]), head[OFFSET_WIDTH:] or None, data)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class LedgerStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = PREFIX,
                 max_deduplication_seconds: int = DEFAULT_MAX_DEDUPLICATION_SECONDS) -> None:
        self._r = redis
        self._p = prefix
        self.max_deduplication_ms = max_deduplication_seconds * 1000
        self._commit = redis.register_script(_COMMIT)
        self._prune = redis.register_script(_PRUNE)
        self._scan_acs = redis.register_script(_SCAN_ACS)
        self._allocate = redis.register_script(_ALLOCATE)

    @property
    def channel(self) -> str:
        """Where every commit's log entry is published."""
        return f"{self._p}:transactions"

    def key(self, name: str) -> str:
        return f"{self._p}:{name}"

    @staticmethod
    def _key_field(template_id: str, key_slot: str) -> str:
        return f"{template_id}:{key_slot}"

    @staticmethod
    def _command_digest(command: tuple[str, tuple[str, ...], str]) -> str:
        application, parties, command_id = command
        text = json.dumps([application, sorted(parties), command_id])
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ commits
    async def commit(self, commit: Commit) -> Committed:
        """Apply and log the transaction atomically, or raise CommitRejected and change
        nothing."""
        keys = [self.key("offset"), self.key("parties"), self.key("acs"), self.key("keys"),
                self.key("log")]
        dedup = 0
        if commit.command is not None:
            keys.append(self.key(f"cmd:{self._command_digest(commit.command)}"))
            dedup = len(keys)
        period = commit.deduplication

        def field(contract: StoredContract) -> str:
            return self._key_field(contract.template_id, contract.key_slot or "")

        archive = [[c.contract_id, field(c) if c.key_slot else ""] for c in commit.archived]
        archived_ids = {c.contract_id for c in commit.archived}
        released = {f for _, f in archive if f}
        expectations: list[list[str]] = [
            [self._key_field(template_id, slot), seen or "", template_id]
            for template_id, slot, seen in commit.key_expectations]
        create = []
        for c in commit.created:
            slot_field = field(c) if c.key_slot else ""
            if slot_field and slot_field not in released:
                # A new key must be free unless this transaction archives its holder.
                expectations.append([slot_field, "", c.template_id])
            create.append([c.contract_id, slot_field, c.key_slot or ""])
        spec = {
            "dedup": dedup,
            "window": (self.max_deduplication_ms if period.window_ms is None
                       else period.window_ms),
            "after": period.after_offset or "",
            "ttl": self.max_deduplication_ms,
            "width": OFFSET_WIDTH,
            "inputs": [cid for cid in commit.inputs if cid not in archived_ids],
            "keys": expectations,
            "archive": archive,
            "create": create,
            "parties": sorted({p for c in commit.created for p in c.stakeholders}),
            "channel": self.channel,
        }
        header: dict[str, Any] = {}
        if commit.command is not None:
            header["commandId"] = commit.command[2]
        if commit.submission_id is not None:
            header["submissionId"] = commit.submission_id
        header["created"] = [[c.contract_id, c.key_slot] for c in commit.created]
        header["archived"] = [[c.contract_id, c.key_slot] for c in commit.archived]
        reply = await self._commit(
            keys=keys,
            args=[compact(spec), compact(header), *(c.to_text() for c in commit.created)],
        )
        status, detail = (_text(part) for part in reply)
        if status != "ok":
            metrics.CONFLICTS.labels(status).inc()
            raise CommitRejected(status, detail)
        metrics.COMMITS.inc()
        metrics.END_OFFSET.set(int(detail))
        return Committed(detail)

    async def ledger_end(self) -> str | None:
        """The offset of the last commit, or None on an empty ledger."""
        raw = await self._r.get(self.key("offset"))
        return None if raw is None else format_offset(int(raw))

    # ------------------------------------------------------------------ the log
    async def read_log(self, after: int, limit: int) -> list[LoggedTransaction]:
        """Up to `limit` transactions following offset `after`, in order; HistoryPruned when
        the log no longer starts right after it."""
        async with self._r.pipeline(transaction=True) as tx:
            tx.get(self.key("pruned"))
            tx.xrange(self.key("log"), f"{after + 1}-0", "+", count=limit)
            pruned_raw, entries = await tx.execute()
        pruned = int(pruned_raw or 0)
        if after < pruned:
            raise HistoryPruned(pruned)
        found = [parse_entry(fields[b"t"]) for _, fields in entries]
        for expected, transaction in enumerate(found, start=after + 1):
            if transaction.offset != expected:  # cannot happen while `pruned` is kept right
                raise HistoryPruned(transaction.offset - 1)
        return found

    async def pruned_offset(self) -> int:
        """The pruning offset: the log holds every transaction after it (0: all of them)."""
        return int(await self._r.get(self.key("pruned")) or 0)

    async def prune(self, max_transactions: int, max_age_seconds: float) -> int:
        """Apply the log's retention (each limit 0 for none); returns the pruning offset."""
        cutoff = int((time.time() - max_age_seconds) * 1000) if max_age_seconds > 0 else 0
        pruned = await self._prune(keys=[self.key("log"), self.key("pruned"),
                                         self.key("offset")],
                                   args=[max_transactions, cutoff])
        return int(pruned)

    # ------------------------------------------------------------------ contract reads
    async def contract(self, contract_id: str) -> StoredContract | None:
        raw = await self._r.hget(self.key("acs"), contract_id)
        return None if raw is None else parse_stored(raw).contract()

    async def contract_rows(self, contract_ids: Sequence[str]) -> dict[str, ContractRow]:
        """The active ones of these contracts, as the query store keeps them."""
        if not contract_ids:
            return {}
        raws = await self._r.hmget(self.key("acs"), list(contract_ids))
        return {cid: parse_stored(raw) for cid, raw in zip(contract_ids, raws, strict=True)
                if raw is not None}

    async def key_holder(self, template_id: str, key_slot: str) -> str | None:
        """The id of the active contract holding the key with this `key_hash` slot, if any."""
        cid = await self._r.hget(self.key("keys"), self._key_field(template_id, key_slot))
        return None if cid is None else _text(cid)

    async def scan_active(self, cursor: int, count: int) -> tuple[int, list[ContractRow]]:
        """One step of a scan over every active contract (a Redis HSCAN: a contract active for
        the whole scan is returned at least once, one created or archived meanwhile may or may
        not be)."""
        next_cursor, blob = await self._scan_acs(keys=[self.key("acs")], args=[cursor, count])
        lines = _text(blob).split("\n") if blob else []
        heads, texts = lines[0::2], lines[1::2]
        parsed = json.loads("[" + ",".join(texts) + "]")
        rows = [ContractRow.parse(text, int(head[:OFFSET_WIDTH]), head[OFFSET_WIDTH:] or None,
                                  data)
                for head, text, data in zip(heads, texts, parsed, strict=True)]
        return int(next_cursor), rows

    # ------------------------------------------------------------------ parties
    async def parties(self) -> list[Party]:
        entries = await self._r.hgetall(self.key("parties"))
        parties = [Party.from_record(_text(k), v) for k, v in entries.items()]
        return sorted(parties, key=lambda p: p.identifier)

    async def parties_by_id(self, identifiers: Sequence[str]) -> dict[str, Party]:
        if not identifiers:
            return {}
        raws = await self._r.hmget(self.key("parties"), list(identifiers))
        return {
            identifier: Party.from_record(identifier, raw)
            for identifier, raw in zip(identifiers, raws, strict=True)
            if raw is not None
        }

    async def allocate_party(self, party: Party) -> bool:
        """Add the party; False when a party with that identifier already exists."""
        added = await self._allocate(keys=[self.key("parties")],
                                     args=[party.identifier, party.to_record()])
        return bool(added)

    # ------------------------------------------------------------------ packages
    async def add_packages(self, dar_blob_key: str, package_ids: Sequence[str]) -> None:
        """Index the packages of a stored DAR; packages already known keep their first DAR."""
        now = time.time()
        async with self._r.pipeline(transaction=True) as tx:
            for package_id in package_ids:
                tx.hsetnx(self.key("package-dar"), package_id, dar_blob_key)
            tx.zadd(self.key("packages"), dict.fromkeys(package_ids, now), nx=True)
            await tx.execute()

    async def package_ids(self) -> list[str]:
        members: Any = await self._r.zrange(self.key("packages"), 0, -1)
        return [_text(m) for m in members]

    async def dar_of(self, package_id: str) -> str | None:
        raw = await self._r.hget(self.key("package-dar"), package_id)
        return None if raw is None else _text(raw)

    async def dars_of(self, package_ids: Sequence[str]) -> dict[str, str]:
        if not package_ids:
            return {}
        raws = await self._r.hmget(self.key("package-dar"), list(package_ids))
        return {p: _text(r) for p, r in zip(package_ids, raws, strict=True) if r is not None}
