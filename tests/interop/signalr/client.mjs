// Interop check: Microsoft's official SignalR client (@microsoft/signalr) against keepwire's
// emulated market hub.
//
//   node client.mjs --hub URL --api URL --admin URL [--user U] [--key K] [--contract ID]
//                   [--quotes N] [--timeout-ms MS]
//
// It logs in through the emulator's token service, connects with an accessTokenFactory that
// validates (or logs in again) on every call, subscribes to quotes, then has the emulator
//   1. drop the socket (no close): the client reconnects by itself, resubscribes, gets quotes;
//   2. expire every token (Close "Unauthorized", allowReconnect): the factory's validate is
//      refused, it logs in again, the client reconnects, resubscribes, gets quotes.
// Prints one JSON summary line on stdout and exits 0 on success; on failure prints
// `FAILED: why` on stderr and exits 1. Bounded by --timeout-ms (default 45 s).

import * as signalR from "@microsoft/signalr";

function parseArgs(argv) {
  const args = {
    user: "kwuser1",
    key: "kw-demo-key",
    contract: "CON.F.US.EP.U25",
    quotes: 3,
    timeoutMs: 45000,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) fail(`missing value for ${name}`);
    switch (name) {
      case "--hub": args.hub = value; break;
      case "--api": args.api = value; break;
      case "--admin": args.admin = value; break;
      case "--user": args.user = value; break;
      case "--key": args.key = value; break;
      case "--contract": args.contract = value; break;
      case "--quotes": args.quotes = Number(value); break;
      case "--timeout-ms": args.timeoutMs = Number(value); break;
      default: fail(`unknown argument ${name}`);
    }
  }
  for (const required of ["hub", "api", "admin"]) {
    if (!args[required]) fail(`--${required} is required`);
  }
  return args;
}

function fail(message) {
  process.stderr.write(`FAILED: ${message}\n`);
  process.exit(1);
}

const args = parseArgs(process.argv.slice(2));
const stats = {
  ok: false,
  version: signalR.VERSION,
  tokenFactoryCalls: 0,
  logins: 0,
  validates: 0,
  validatesRefused: 0,
  reconnecting: 0,
  reconnected: 0,
  connectionIds: [],
  quotes: [0, 0, 0],
};
let phase = 0;
let token = null;

const deadline = setTimeout(() => {
  fail(`timed out after ${args.timeoutMs} ms in phase ${phase}: ${JSON.stringify(stats)}`);
}, args.timeoutMs);

async function postJson(url, body, bearer) {
  const headers = { "Content-Type": "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const res = await fetch(url, {
    method: "POST",
    headers,
    body: body === undefined ? "" : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: res.status, json };
}

async function login() {
  stats.logins += 1;
  const { status, json } = await postJson(`${args.api}/Auth/loginKey`, {
    userName: args.user,
    apiKey: args.key,
  });
  if (status !== 200 || !json || json.success !== true || typeof json.token !== "string") {
    throw new Error(`loginKey failed: HTTP ${status} ${JSON.stringify(json)}`);
  }
  return json.token;
}

// Never a captured token (seed 003): every call validates the current token and takes the new
// one, or logs in again when the token is refused.
async function accessTokenFactory() {
  stats.tokenFactoryCalls += 1;
  if (token) {
    stats.validates += 1;
    const { status, json } = await postJson(`${args.api}/Auth/validate`, undefined, token);
    if (status === 200 && json && json.success === true && typeof json.newToken === "string") {
      token = json.newToken;
      return token;
    }
    stats.validatesRefused += 1;
  }
  token = await login();
  return token;
}

async function inject(hubFault) {
  const res = await fetch(`${args.admin}/admin/faults`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ fault: "hub", ...hubFault }),
  });
  if (res.status !== 200) throw new Error(`admin fault ${JSON.stringify(hubFault)}: HTTP ${res.status}`);
}

// Resolves when `count` quotes arrived in the current phase.
let quoteWaiter = null;
function waitForQuotes(count) {
  return new Promise((resolve) => {
    quoteWaiter = { count, resolve };
    checkQuotes();
  });
}
function checkQuotes() {
  if (quoteWaiter && stats.quotes[phase] >= quoteWaiter.count) {
    const { resolve } = quoteWaiter;
    quoteWaiter = null;
    resolve();
  }
}

let reconnectedWaiter = null;
function waitForReconnect() {
  return new Promise((resolve) => { reconnectedWaiter = resolve; });
}

const connection = new signalR.HubConnectionBuilder()
  .withUrl(args.hub, { accessTokenFactory })
  .withAutomaticReconnect()
  .configureLogging(signalR.LogLevel.Warning)
  .build();

connection.on("GatewayQuote", (contractId, quote) => {
  if (contractId !== args.contract) {
    fail(`GatewayQuote for ${JSON.stringify(contractId)}, subscribed ${args.contract}`);
  }
  for (const field of ["symbol", "lastPrice", "bestBid", "bestAsk", "timestamp"]) {
    if (quote === null || typeof quote !== "object" || !(field in quote)) {
      fail(`GatewayQuote without ${field}: ${JSON.stringify(quote)}`);
    }
  }
  stats.quotes[phase] += 1;
  checkQuotes();
});
connection.onreconnecting(() => { stats.reconnecting += 1; });
connection.onreconnected((connectionId) => {
  stats.reconnected += 1;
  stats.connectionIds.push(connectionId);
  if (reconnectedWaiter) {
    const resolve = reconnectedWaiter;
    reconnectedWaiter = null;
    resolve();
  }
});
connection.onclose((error) => {
  if (!stats.ok) fail(`connection closed for good in phase ${phase}: ${error}`);
});

async function main() {
  token = await login();
  await connection.start();
  stats.connectionIds.push(connection.connectionId);
  const reply = await connection.invoke("SubscribeContractQuotes", args.contract);
  if (reply !== null && reply !== undefined) throw new Error(`subscribe answered ${JSON.stringify(reply)}`);
  await waitForQuotes(args.quotes);

  // 1. The socket vanishes: automatic reconnect, resubscribe, quotes again.
  let reconnected = waitForReconnect();
  phase = 1;
  await inject({ hub_fault: "drop" });
  await reconnected;
  await connection.invoke("SubscribeContractQuotes", args.contract);
  await waitForQuotes(args.quotes);

  // 2. Every token expires mid-stream: Close "Unauthorized" with allowReconnect; the factory's
  // validate is refused, it logs in again; reconnect, resubscribe, quotes again.
  reconnected = waitForReconnect();
  phase = 2;
  await inject({ hub_fault: "expire_tokens" });
  await reconnected;
  await connection.invoke("SubscribeContractQuotes", args.contract);
  await waitForQuotes(args.quotes);

  if (new Set(stats.connectionIds).size !== 3) {
    throw new Error(`expected 3 distinct connection ids, got ${JSON.stringify(stats.connectionIds)}`);
  }
  if (stats.validatesRefused < 1) throw new Error("the expired token was never refused");
  stats.ok = true;
  await connection.stop();
  clearTimeout(deadline);
  stats.connectionIds = stats.connectionIds.length;
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  process.exit(0);
}

main().catch((err) => fail(`${err && err.stack ? err.stack : err} ${JSON.stringify(stats)}`));
