// Drives the call pages in headless Chromium for tests/e2e/test_webrtc.py.
// Usage: node drive.mjs BASE_URL
// One JSON command per stdin line, one JSON answer per stdout line
// ({"ok": value} or {"error": message}):
//   {"cmd": "open", "who": NAME, "query": QUERY}   opens BASE_URL/index.html?QUERY
//                                                  in a fresh browser context
//   {"cmd": "eval", "who": NAME, "expr": JS}       the (awaited) value of JS in that page
//   {"cmd": "frames", "who": NAME}                 every websocket frame that page received
//   {"cmd": "quit"}                                closes the browser, answers, exits
// The pages' console goes to stderr, each line prefixed with the time.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [base] = process.argv.slice(2);
const t0 = Date.now();
const err = (line) => process.stderr.write(`+${((Date.now() - t0) / 1000).toFixed(2)}s ${line}\n`);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // A microphone that plays a tone, granted without asking.
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
  ],
});
const pages = {};
const frames = {};

async function open(who, query) {
  // A context of its own: separate storage, as two machines would have.
  const ctx = await browser.newContext();
  await ctx.grantPermissions(["microphone"]);
  const page = await ctx.newPage();
  page.on("console", (m) => err(`${who} console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => err(`${who} pageerror: ${e.message}`));
  // Nothing leaves this machine.
  await page.route((u) => !["127.0.0.1", "localhost"].includes(u.hostname), (r) => r.abort());
  frames[who] = [];
  page.on("websocket", (ws) => ws.on("framereceived", (f) => frames[who].push(String(f.payload))));
  await page.goto(`${base}/index.html?${query}`);
  pages[who] = page;
  return true;
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let c;
  try {
    c = JSON.parse(line);
    if (c.cmd === "open") say({ ok: await open(c.who, c.query) });
    else if (c.cmd === "eval") say({ ok: (await pages[c.who].evaluate(c.expr)) ?? null });
    else if (c.cmd === "frames") say({ ok: frames[c.who] || [] });
    else if (c.cmd === "quit") break;
    else say({ error: `unknown command ${line}` });
  } catch (e) {
    say({ error: String(e && e.stack || e) });
  }
}
await browser.close();
say({ ok: "bye" });
process.exit(0);
