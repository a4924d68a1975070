// Drives Converse.js in headless Chromium for tests/e2e/test_browser.py.
// Usage: node roster.mjs URL JID PASSWORD CONTACT SHOTS_DIR
// Logs in through the login form, adds CONTACT through the "Add a contact"
// form, then obeys one command per stdin line and answers on stdout:
//   expect <online|away|dnd|xa|offline>  -> "saw <status>" once CONTACT's
//                                          roster entry shows it (or "timeout ...")
//   shot <name>                          -> "shot <path>"
//   quit                                 -> writes every websocket frame the
//                                          browser received to SHOTS_DIR/frames.xml,
//                                          closes the browser -> "bye"
import { chromium } from "playwright-core";
import readline from "node:readline";
import path from "node:path";

const [url, jid, password, contact, shots] = process.argv.slice(2);
const say = (line) => process.stdout.write(line + "\n");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
page.on("console", (m) => { if (m.type() === "error") process.stderr.write(`console: ${m.text()}\n`); });
// Everything comes from this machine: Converse's login page links sponsor
// logos on conversejs.org, which are refused here rather than timing out.
await page.route((u) => !["127.0.0.1", "localhost"].includes(u.hostname), (r) => r.abort());
// Every frame the server sends Bob's browser, for the privacy check.
const frames = [];
page.on("websocket", (ws) => ws.on("framereceived", (f) => frames.push(String(f.payload))));
page.on("pageerror", (e) => process.stderr.write(`pageerror: ${e}\n`));

// What the roster shows for CONTACT: the title Converse gives her status
// icon ("This contact is away"), which is what Bob reads when he points at it.
async function shownStatus() {
  return page.evaluate((contact) => {
    const item = document.querySelector(`converse-roster-contact a.open-chat[data-jid="${contact}"]`)
      ?.closest("converse-roster-contact");
    if (!item) return null;
    const icon = item.querySelector("[title^='This contact is']");
    return { title: icon?.getAttribute("title") || "", text: item.innerText.trim() };
  }, contact);
}

const TITLE = { online: "This contact is online", away: "This contact is away", dnd: "This contact is busy",
  xa: "This contact is away for an extended period", offline: "This contact is offline" };

try {
  await page.goto(url);
  await page.locator("converse-login-form input[name=jid]").fill(jid);
  await page.locator("converse-login-form input[name=password]").fill(password);
  await page.locator("converse-login-form [type=submit]").click();
  await page.locator("converse-roster").waitFor({ timeout: 20000 });
  say("logged-in");
  // "Add a contact" sits in the roster's dropdown menu.
  await page.locator("converse-roster .dropdown-toggle").first().click();
  await page.locator("a.add-contact").click();
  const form = page.locator("form.add-xmpp-contact");
  await form.locator("input[name=jid]:visible").fill(contact);
  await form.locator("input[name=name]").fill("Alice");
  await form.locator("[type=submit]").click();
  await page.locator(`converse-roster-contact a.open-chat[data-jid="${contact}"]`).waitFor({ timeout: 20000 });
  say("added");
} catch (e) {
  await page.screenshot({ path: path.join(shots, "failed.png") }).catch(() => {});
  say(`error ${String(e).split("\n")[0]}`);
  await browser.close();
  process.exit(1);
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === "expect") {
    const want = TITLE[arg];
    const deadline = Date.now() + 15000;
    let seen = null;
    while (Date.now() < deadline) {
      seen = await shownStatus();
      if (seen && seen.title === want) break;
      await page.waitForTimeout(100);
    }
    say(seen && seen.title === want ? `saw ${arg} ${JSON.stringify(seen)}` : `timeout ${arg} ${JSON.stringify(seen)}`);
  } else if (cmd === "shot") {
    const file = path.join(shots, `${arg}.png`);
    await page.screenshot({ path: file, fullPage: true });
    say(`shot ${file}`);
  } else if (cmd === "quit") {
    break;
  }
}
const fs = await import("node:fs");
fs.writeFileSync(path.join(shots, "frames.xml"), frames.join("\n"));
await browser.close();
say("bye");
// The readline interface would keep the process alive on its open stdin.
process.exit(0);
