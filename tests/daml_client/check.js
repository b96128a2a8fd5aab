// Cairn's ledger driven by the real npm @daml/ledger client (`make daml-client`).
//
// Starts the stack the way the e2e tests do (`python -m cairn.stack` on free ports, stdin closed),
// runs the client's operations one by one (pass/fail each), then the scenario issue 10 was about:
// a streamQuery that loses its connection while commits happen, reconnects by itself with the last
// offset it saw, and must end with exactly what `ledger.query` returns. Every WebSocket frame the
// client sends and receives goes to <run dir>/frames.jsonl; the run dir is kept when a check fails.
"use strict";

const assert = require("node:assert/strict");
const childProcess = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const WebSocket = require("isomorphic-ws"); // the class @daml/ledger opens its streams with
const jtv = require("@mojotech/json-type-validation");
const damlTypes = require("@daml/types");
const { default: Ledger } = require("@daml/ledger");

const REPO = path.resolve(__dirname, "../..");
const PYTHON = process.env.CAIRN_PYTHON || path.join(REPO, ".venv/bin/python");
const DAR = path.resolve(REPO, process.env.CAIRN_DAR ||
  "../shared/fixtures/daml/model-tests-1.15.dar");
const WAIT_MS = 20000;
// How long a stream must have been live before @daml/ledger reconnects it instead of giving up
// (its default is 30 s); the scenarios wait longer than this before cutting the connection.
const RECONNECT_THRESHOLD_MS = 1000;

// Sandbox-mode tokens (the ledger decodes, not verifies, them): the JSON API documentation's
// Alice and Bob, as tests/e2e/test_ledger_exercise_rest.py uses them.
const ALICE =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJodHRwczovL2RhbWwuY29tL2xlZGdlci1hcGkiOnsibGVkZ2VySWQi" +
  "OiJNeUxlZGdlciIsImFwcGxpY2F0aW9uSWQiOiJIVFRQLUpTT04tQVBJLUdhdGV3YXkiLCJhY3RBcyI6WyJBbGljZSJdfX0" +
  ".34zzF_fbWv7p60r5s1kKzwndvGdsJDX-W4Xhm4oVdpk";
const BOB =
  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJodHRwczovL2RhbWwuY29tL2xlZGdlci1hcGkiOnsibGVkZ2VySWQi" +
  "OiJNeUxlZGdlciIsImFwcGxpY2F0aW9uSWQiOiJIVFRQLUpTT04tQVBJLUdhdGV3YXkiLCJhY3RBcyI6WyJCb2IiXX19" +
  ".0uPPZtM1AmKvnGixt_Qo53cMDcpnziCjKKiWLvMX2VM";

// ------------------------------------------------------------------ templates
// What `daml codegen js` would generate for model-tests-1.15.dar, written by hand for the three
// templates used here (the codegen needs the DAML SDK).
const PACKAGE_ID = "41df902af320227f24036cb113173b9133c222b341294544017bbd2534b28d35";
const { Party, Text, Numeric, List, ContractId, Unit } = damlTypes;
const noKey = { keyDecoder: jtv.constant(undefined), keyEncode: () => { throw "EncodeError"; } };

function record(fields) {
  return {
    decoder: jtv.object(Object.fromEntries(Object.entries(fields).map(([k, t]) => [k, t.decoder]))),
    encode: (value) => Object.fromEntries(Object.entries(fields).map(([k, t]) => [k, t.encode(value[k])])),
  };
}

function choice(template, choiceName, argument, result) {
  return {
    template: () => template, choiceName, argumentDecoder: argument.decoder,
    argumentEncode: argument.encode, resultDecoder: result.decoder,
  };
}

const IouFields = record({
  issuer: Party, owner: Party, currency: Text, amount: Numeric(10), observers: List(Party),
});
const Iou = { templateId: `${PACKAGE_ID}:Iou:Iou`, ...IouFields, ...noKey };
const IouTransfer = {
  templateId: `${PACKAGE_ID}:Iou:IouTransfer`, ...record({ iou: IouFields, newOwner: Party }), ...noKey,
};
const TextKeyKey = record({ _1: Party, _2: Text });
const TextKey = {
  templateId: `${PACKAGE_ID}:Test:TextKey`,
  ...record({ tkParty: Party, tkKey: Text, tkDisclosedTo: List(Party) }),
  keyDecoder: TextKeyKey.decoder, keyEncode: TextKeyKey.encode,
};
const Tuple2Cids = record({ _1: ContractId(Iou), _2: ContractId(Iou) });
for (const t of [Iou, IouTransfer, TextKey]) {
  t.Archive = choice(t, "Archive", Unit, Unit);
}
Iou.Iou_Split = choice(Iou, "Iou_Split", record({ splitAmount: Numeric(10) }), Tuple2Cids);
Iou.Iou_Merge = choice(Iou, "Iou_Merge", record({ otherCid: ContractId(Iou) }), ContractId(Iou));
Iou.Iou_Transfer = choice(Iou, "Iou_Transfer", record({ newOwner: Party }), ContractId(IouTransfer));
IouTransfer.IouTransfer_Accept = choice(IouTransfer, "IouTransfer_Accept", Unit, ContractId(Iou));
TextKey.TextKeyChoice = choice(TextKey, "TextKeyChoice", Unit, Unit);
// The multiplexing stream manager decodes events by the template id it finds in them.
for (const t of [Iou, IouTransfer, TextKey]) damlTypes.registerTemplate(t, [PACKAGE_ID]);

const iou = (fields) => ({
  issuer: "Alice", owner: "Alice", currency: "USD", amount: "100.0", observers: [], ...fields,
});

// ------------------------------------------------------------------ frame capture
let framesFile = null;
const socketIds = new WeakMap();
let nextSocketId = 1;
const frames = []; // {t, socket, url, dir, data}

function noteFrame(socket, dir, data) {
  if (!socketIds.has(socket)) socketIds.set(socket, nextSocketId++);
  const frame = { t: Date.now(), socket: socketIds.get(socket), url: socket.url, dir, data };
  frames.push(frame);
  if (framesFile !== null) fs.appendFileSync(framesFile, JSON.stringify(frame) + "\n");
}

const originalSend = WebSocket.prototype.send;
WebSocket.prototype.send = function send(data, ...rest) {
  noteFrame(this, "sent", String(data));
  return originalSend.call(this, data, ...rest);
};
const originalEmit = WebSocket.prototype.emit;
WebSocket.prototype.emit = function emit(event, ...args) {
  if (event === "message") noteFrame(this, "received", String(args[0]));
  else if (event === "open") noteFrame(this, "open", "");
  else if (event === "close") noteFrame(this, "close", `${args[0]} ${String(args[1] || "")}`);
  else if (event === "error") {
    noteFrame(this, "error", String(args[0] && args[0].message));
    // @daml/ledger listens for 'close' only, as browsers allow; Node's ws would throw an 'error'
    // nobody listens for (a refused reconnect kills the process), so do what a browser does.
    if (this.listenerCount("error") === 0) return false;
  }
  return originalEmit.call(this, event, ...args);
};

// ------------------------------------------------------------------ helpers
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, predicate, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function byId(contracts) {
  return [...contracts].sort((a, b) => (a.contractId < b.contractId ? -1 : 1));
}

/** A TCP relay in front of Envoy for the client's WebSockets. `cut()` drops every open
 * connection and holds new ones unanswered (like a network partition: the client's reconnect
 * waits), `release()` lets them through. */
function relay(targetPort) {
  const tunnels = new Set();
  const held = [];
  let holding = false;
  const connect = (client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const tunnel = { client, upstream };
    tunnels.add(tunnel);
    const end = () => { client.destroy(); upstream.destroy(); tunnels.delete(tunnel); };
    for (const s of [client, upstream]) { s.on("error", end); s.on("close", end); }
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const server = net.createServer((client) => {
    if (holding) { client.pause(); held.push(client); } else connect(client);
  });
  return {
    listen: () => new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port))),
    cut() { holding = true; for (const t of tunnels) { t.client.destroy(); t.upstream.destroy(); } },
    heldCount: () => held.length,
    release() { holding = false; for (const c of held.splice(0)) connect(c); },
    close: () => { for (const t of tunnels) { t.client.destroy(); t.upstream.destroy(); } server.close(); },
  };
}

// ------------------------------------------------------------------ the stack
async function startStack(runDir) {
  const names = ["project", "component", "auth", "ledger"];
  const ports = {};
  for (const n of [...names, "http", "admin", "stats"]) ports[n] = await freePort();
  const env = { ...process.env, CAIRN_RUN_DIR: runDir, CAIRN_HTTP_PORT: String(ports.http),
    CAIRN_ENVOY_ADMIN_PORT: String(ports.admin), CAIRN_ENVOY_STATS_PORT: String(ports.stats) };
  for (const n of names) env[`CAIRN_${n.toUpperCase()}_GRPC_PORT`] = String(ports[n]);
  delete env.CAIRN_ROOT_TOKEN;
  delete env.CAIRN_REDIS_URL;
  const logPath = path.join(runDir, "stack.log");
  const log = fs.openSync(logPath, "a");
  const child = childProcess.spawn(PYTHON, ["-m", "cairn.stack"], {
    cwd: REPO, env, stdio: ["ignore", log, log],
  });
  fs.closeSync(log);
  let exited = null;
  child.on("exit", (code, signal) => { exited = { code, signal }; });
  process.on("exit", () => { if (exited === null) child.kill("SIGTERM"); }); // also on a crash
  await until("the stack's banner", () => {
    if (exited) throw new Error(`the stack exited (${JSON.stringify(exited)}):\n${fs.readFileSync(logPath, "utf8").slice(-3000)}`);
    return fs.readFileSync(logPath, "utf8").includes("Cairn is running");
  }, 120000);
  return {
    httpPort: ports.http, logPath, child,
    envoyPid: () => childPids(child.pid).find((pid) => comm(pid) === "envoy"),
    async stop() {
      child.kill("SIGTERM");
      await until("the stack to stop", () => exited !== null, 30000);
      return exited;
    },
  };
}

function comm(pid) {
  try { return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim(); } catch { return ""; }
}

function childPids(parent) {
  return fs.readdirSync("/proc").filter((n) => /^\d+$/.test(n)).map(Number).filter((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === parent;
    } catch { return false; }
  });
}

// ------------------------------------------------------------------ operations
const results = [];

async function op(name, body) {
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`PASS ${name}`);
  } catch (error) {
    results.push({ name, ok: false, error });
    console.log(`FAIL ${name}: ${error && (error.stack || JSON.stringify(error))}`);
  }
}

/** A stream handle with its last 'change' state, 'live' and 'close' recorded. */
function follow(stream) {
  const seen = { state: null, live: false, closed: null, changes: 0 };
  stream.on("live", (state) => { seen.live = true; seen.state = state; });
  stream.on("change", (state) => { seen.state = state; seen.changes += 1; });
  stream.on("close", (status) => { seen.closed = status; });
  return seen;
}

async function operations(alice, bob) {
  const dar = fs.readFileSync(DAR);
  await op("uploadDarFile", async () => {
    await alice.uploadDarFile(dar.buffer.slice(dar.byteOffset, dar.byteOffset + dar.byteLength));
  });
  await op("listPackages", async () => assert.ok((await alice.listPackages()).includes(PACKAGE_ID)));
  await op("getPackage", async () => {
    const bytes = new Uint8Array(await alice.getPackage(PACKAGE_ID));
    assert.ok(bytes.length > 1000, `${bytes.length} bytes`);
  });
  await op("allocateParty", async () => {
    const party = await alice.allocateParty({ identifierHint: `Carol${Date.now()}`, displayName: "Carol" });
    assert.ok(party.identifier.startsWith("Carol"), JSON.stringify(party));
  });
  await op("listKnownParties", async () => assert.ok(Array.isArray(await alice.listKnownParties())));
  await op("getParties", async () => {
    const [known, unknown] = await alice.getParties([(await alice.listKnownParties())[0].identifier, "NoSuchParty"]);
    assert.ok(known && known.identifier, JSON.stringify(known));
    assert.equal(unknown, null);
  });

  let created;
  await op("create", async () => {
    created = await alice.create(Iou, iou({ currency: "OPS" }));
    assert.equal(created.templateId, Iou.templateId);
    assert.deepEqual(created.payload, iou({ currency: "OPS" })); // "100.0": the JSON API's numeric form
    assert.deepEqual(created.signatories, ["Alice"]);
  });
  await op("fetch", async () => assert.deepEqual(await alice.fetch(Iou, created.contractId), created));
  await op("fetch (someone else's contract: null)", async () =>
    assert.equal(await bob.fetch(Iou, created.contractId), null));
  await op("query", async () => {
    const all = await alice.query(Iou);
    assert.ok(all.some((c) => c.contractId === created.contractId));
  });
  await op("query with a filter", async () =>
    assert.deepEqual(await alice.query(Iou, { currency: "OPS" }), [created]));
  await op("query with a comparison", async () =>
    assert.deepEqual(await alice.query(Iou, { currency: "OPS", amount: { "%gte": "50" } }), [created]));

  let halves;
  await op("exercise Iou_Split (tuple result)", async () => {
    const [result, events] = await alice.exercise(Iou.Iou_Split, created.contractId, { splitAmount: "40" });
    halves = result;
    assert.equal(events.length, 3);
    assert.deepEqual(events[0], { archived: { templateId: Iou.templateId, contractId: created.contractId } });
    assert.deepEqual(events.slice(1).map((e) => e.created.payload.amount), ["40.0", "60.0"]);
  });
  await op("exercise Iou_Merge", async () => {
    const [merged] = await alice.exercise(Iou.Iou_Merge, halves._1, { otherCid: halves._2 });
    assert.equal((await alice.fetch(Iou, merged)).payload.amount, "100.0");
  });
  await op("exercise Iou_Transfer, then Bob accepts", async () => {
    const mine = await alice.create(Iou, iou({ currency: "OPS-T" }));
    const [transfer] = await alice.exercise(Iou.Iou_Transfer, mine.contractId, { newOwner: "Bob" });
    assert.equal((await bob.fetch(IouTransfer, transfer)).payload.newOwner, "Bob");
    const [accepted] = await bob.exercise(IouTransfer.IouTransfer_Accept, transfer, {});
    assert.equal((await bob.fetch(Iou, accepted)).payload.owner, "Bob");
  });
  await op("createAndExercise", async () => {
    const [transfer, events] = await alice.createAndExercise(Iou.Iou_Transfer, iou({ currency: "OPS-CE" }), { newOwner: "Bob" });
    // The JSON API's tree: the Iou created, consumed by the choice, and the IouTransfer.
    const [made, consumed, transferred] = events;
    assert.equal(made.created.templateId, Iou.templateId);
    assert.deepEqual(consumed, { archived: { templateId: Iou.templateId, contractId: made.created.contractId } });
    assert.equal(transferred.created.templateId, IouTransfer.templateId);
    assert.equal(transferred.created.contractId, transfer);
  });
  await op("archive", async () => {
    const gone = await alice.create(Iou, iou({ currency: "OPS-A" }));
    const archived = await alice.archive(Iou, gone.contractId);
    assert.equal(archived.contractId, gone.contractId);
    assert.equal(await alice.fetch(Iou, gone.contractId), null);
  });

  const keyName = `k-${Date.now()}`;
  const key = { _1: "Alice", _2: keyName };
  let keyed;
  await op("create with a key", async () => {
    keyed = await alice.create(TextKey, { tkParty: "Alice", tkKey: keyName, tkDisclosedTo: [] });
    assert.deepEqual(keyed.key, key);
  });
  await op("fetchByKey", async () => assert.deepEqual(await alice.fetchByKey(TextKey, key), keyed));
  await op("fetchByKey (no contract: null)", async () =>
    assert.equal(await alice.fetchByKey(TextKey, { _1: "Alice", _2: "nothing" }), null));
  await op("exerciseByKey (a consuming choice)", async () => {
    const [result, events] = await alice.exerciseByKey(TextKey.TextKeyChoice, key, {});
    assert.deepEqual(result, {});
    assert.deepEqual(events, [{ archived: { templateId: TextKey.templateId, contractId: keyed.contractId } }]);
    keyed = await alice.create(TextKey, { tkParty: "Alice", tkKey: keyName, tkDisclosedTo: [] });
  });

  await op("streamQuery (snapshot, live, a create, an archive)", async () => {
    const seen = follow(alice.streamQuery(Iou, { currency: "OPS-S" }));
    const first = await alice.create(Iou, iou({ currency: "OPS-S" }));
    await until("live", () => seen.live);
    const second = await alice.create(Iou, iou({ currency: "OPS-S", amount: "2" }));
    await until("both", () => seen.state.length === 2);
    await alice.archive(Iou, first.contractId);
    await until("the archive", () => seen.state.length === 1);
    assert.deepEqual(seen.state, [second]);
  });
  await op("streamQueries (two queries)", async () => {
    const seen = follow(alice.streamQueries(Iou, [{ currency: "OPS-Q1" }, { currency: "OPS-Q2" }]));
    await until("live", () => seen.live);
    const a = await alice.create(Iou, iou({ currency: "OPS-Q1" }));
    const b = await alice.create(Iou, iou({ currency: "OPS-Q2" }));
    await alice.create(Iou, iou({ currency: "OPS-Q3" }));
    await until("both", () => seen.state.length === 2);
    assert.deepEqual(byId(seen.state), byId([a, b]));
  });
  await op("streamFetchByKey", async () => {
    const seen = follow(alice.streamFetchByKey(TextKey, key));
    await until("live", () => seen.live);
    assert.deepEqual(seen.state, keyed);
    await alice.archiveByKey(TextKey, key);
    await until("the archive", () => seen.state === null);
  });
  await op("archiveByKey", async () => assert.equal(await alice.fetchByKey(TextKey, key), null));
  await op("streamFetchByKeys", async () => {
    const k2 = { _1: "Alice", _2: `${keyName}-2` };
    const seen = follow(alice.streamFetchByKeys(TextKey, [key, k2]));
    await until("live", () => seen.live);
    assert.deepEqual(seen.state, [null, null]);
    const made = await alice.create(TextKey, { tkParty: "Alice", tkKey: k2._2, tkDisclosedTo: [] });
    await until("the create", () => seen.state[1] !== null);
    assert.deepEqual(seen.state, [null, made]);
  });
}

// ------------------------------------------------------------------ the resume scenario
/** Streams through `relay`; the connection is cut after they have been live longer than the
 * reconnect threshold; creates, archives, a split and a transfer happen while the client's
 * reconnect is held; then it is let through. Each stream must end with exactly `ledger.query`. */
async function resumeAfterDisconnect(http, wsBase, relayed, label) {
  const options = { token: ALICE, httpBaseUrl: http, wsBaseUrl: wsBase,
    reconnectThreshold: RECONNECT_THRESHOLD_MS };
  const plain = new Ledger(options);
  const multiplexed = new Ledger({ ...options, multiplexQueryStreams: true });
  const currency = `RESUME-${label}`;
  const before = [];
  for (const amount of ["1", "2", "3"]) before.push(await plain.create(Iou, iou({ currency, amount })));
  const streams = {
    "streamQuery": follow(plain.streamQuery(Iou, { currency })),
    "streamQuery (multiplexQueryStreams)": follow(multiplexed.streamQuery(Iou, { currency })),
    "streamQuery (all Ious)": follow(plain.streamQuery(Iou)),
  };
  await until("every stream live with the 3 Ious", () => Object.values(streams).every(
    (s) => s.live && s.state && s.state.filter((c) => c.payload.currency === currency).length === 3));
  await sleep(RECONNECT_THRESHOLD_MS + 500);
  const cutAt = frames.length;

  relayed.cut();
  await until("the client's reconnects", () => relayed.heldCount() >= 3);
  // Commits while the client is away: creates, an archive, a split (archive + 2 creates), a
  // transfer away (archive; the IouTransfer is another template), a create the query filters out.
  const during = [];
  for (const amount of ["4", "5"]) during.push(await plain.create(Iou, iou({ currency, amount })));
  await plain.archive(Iou, before[0].contractId);
  await plain.exercise(Iou.Iou_Split, before[1].contractId, { splitAmount: "0.5" });
  await plain.exercise(Iou.Iou_Transfer, during[0].contractId, { newOwner: "Bob" });
  await plain.create(Iou, iou({ currency: `${currency}-other` }));
  relayed.release();

  // And one live commit once every reconnected socket has had its live marker.
  await until("the live marker on each reconnected socket", () => new Set(frames.slice(cutAt)
    .filter((f) => f.dir === "received" && f.data.startsWith('{"events":[],"offset":'))
    .map((f) => f.socket)).size >= 3);
  const after = await plain.create(Iou, iou({ currency, amount: "6" }));
  const outcome = {};
  for (const [name, seen] of Object.entries(streams)) {
    const query = name.includes("all") ? undefined : { currency };
    await op(`${label}: ${name} resumed == ledger.query`, async () => {
      try {
        await until("the stream to match ledger.query", async () => {
          if (seen.closed) throw new Error(`the stream closed: ${JSON.stringify(seen.closed)}`);
          const expected = byId(await plain.query(Iou, query));
          return JSON.stringify(byId(seen.state)) === JSON.stringify(expected) &&
            expected.some((c) => c.contractId === after.contractId);
        });
      } catch (error) {
        const expected = byId(await plain.query(Iou, query));
        console.log(`  stream state (${seen.state.length}): ${JSON.stringify(byId(seen.state).map((c) => c.contractId))}`);
        console.log(`  ledger.query (${expected.length}): ${JSON.stringify(expected.map((c) => c.contractId))}`);
        throw error;
      }
      outcome[name] = byId(seen.state).length;
    });
  }
  const resumed = frames.slice(cutAt);
  const offsets = resumed.filter((f) => f.dir === "sent" && /"offset"/.test(f.data));
  console.log(`  ${label}: after the cut the client sent ${offsets.length} resume requests:`);
  for (const f of offsets) console.log(`    socket ${f.socket} sent ${f.data}`);
  const errors = resumed.filter((f) => f.dir === "received" && /"errors"/.test(f.data));
  await op(`${label}: no error frames after the resume`, async () =>
    assert.deepEqual(errors.map((f) => f.data), []));
  await op(`${label}: every stream resumed at an offset, with no snapshot`, async () => {
    assert.equal(offsets.length, 3);
    const snapshots = resumed.filter((f) => f.dir === "received" && /"matchedQueries"/.test(f.data) &&
      !/"offset"/.test(f.data));
    assert.deepEqual(snapshots.map((f) => f.data), []);
  });
  return { offsets, outcome };
}

/** The other way a client loses its stream: Envoy is killed (the stack restarts it in ~0.5 s).
 * @daml/ledger 2.x reconnects once, at once; whatever it reports is printed. */
async function envoyKill(http, stack) {
  const direct = http.replace("http://", "ws://");
  const ledger = new Ledger({ token: ALICE, httpBaseUrl: http, reconnectThreshold: RECONNECT_THRESHOLD_MS });
  const currency = "RESUME-ENVOY";
  await ledger.create(Iou, iou({ currency }));
  const firstSocket = nextSocketId;
  const seen = follow(ledger.streamQuery(Iou, { currency }));
  await until("live", () => seen.live && seen.state.length === 1);
  await sleep(RECONNECT_THRESHOLD_MS + 500);
  const cutAt = frames.length;
  const pid = stack.envoyPid();
  process.kill(pid, "SIGKILL");
  await until("Envoy back", async () => {
    try { await ledger.create(Iou, iou({ currency, amount: "7" })); return true; } catch { return false; }
  });
  await sleep(2000);
  const sockets = frames.slice(cutAt).filter((f) => f.socket >= firstSocket && f.url.startsWith(direct))
    .map((f) => `socket ${f.socket} ${f.dir} ${f.data}`.slice(0, 200));
  console.log(`  Envoy (pid ${pid}) SIGKILLed; the client then: ${JSON.stringify(seen.closed)}`);
  for (const line of sockets) console.log(`    ${line}`);
  // What an application then does: open the stream again (from the active contracts).
  await op("after an Envoy restart: a new streamQuery == ledger.query", async () => {
    const again = follow(ledger.streamQuery(Iou, { currency }));
    await until("live", () => again.live);
    assert.deepEqual(byId(again.state), byId(await ledger.query(Iou, { currency })));
    assert.equal(again.state.length, 2);
  });
  return seen.closed;
}

// ------------------------------------------------------------------ main
async function main() {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), "cairn-daml-client-"));
  framesFile = path.join(runDir, "frames.jsonl");
  const versions = {
    node: process.version,
    "@daml/ledger": require("@daml/ledger/package.json").version,
    "@daml/types": require("@daml/types/package.json").version,
    ws: require("ws/package.json").version, // isomorphic-ws under Node
  };
  console.log(`versions: ${JSON.stringify(versions)}; run dir ${runDir}`);
  const stack = await startStack(runDir);
  let envoyOutcome;
  const relayed = relay(stack.httpPort);
  try {
    const http = `http://127.0.0.1:${stack.httpPort}/`;
    const alice = new Ledger({ token: ALICE, httpBaseUrl: http });
    const bob = new Ledger({ token: BOB, httpBaseUrl: http });
    await operations(alice, bob);
    const wsBase = `ws://127.0.0.1:${await relayed.listen()}/`;
    await resumeAfterDisconnect(http, wsBase, relayed, "cut");
    envoyOutcome = await envoyKill(http, stack);
  } finally {
    relayed.close();
    const exited = await stack.stop();
    console.log(`stack stopped: ${JSON.stringify(exited)}`);
  }
  const failed = results.filter((r) => !r.ok);
  console.log(`\n${results.length - failed.length} of ${results.length} checks passed` +
    (failed.length ? `; failed: ${failed.map((r) => r.name).join(", ")}` : "") +
    `\nEnvoy SIGKILL: ${envoyOutcome ? `the client closed the stream ${JSON.stringify(envoyOutcome)}` : "the stream stayed open"}` +
    (failed.length ? `\nframes and stack log: ${runDir}` : ""));
  if (!failed.length) fs.rmSync(runDir, { recursive: true, force: true });
  process.exit(failed.length ? 1 : 0);
}

main().catch((error) => { console.error(error); process.exit(2); });
