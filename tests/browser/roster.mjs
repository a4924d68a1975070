// Drives Converse.js in headless Chromium for tests/e2e/test_browser.py.
// Usage: node roster.mjs URL JID PASSWORD CONTACT SHOTS_DIR [NAME]
// Logs in through the login form, adds CONTACT through the "Add a contact"
// form (with NAME, or with no name so that Converse shows hers), then obeys
// one command per stdin line and answers on stdout:
//   expect <online|away|dnd|xa|offline>  -> "saw <status>" once CONTACT's
//                                          roster entry shows it (or "timeout ...")
//   profile <name...>                    -> "profile {name, avatar}" once CONTACT's
//                                          roster entry shows <name> and an avatar
//                                          image (avatar: its data: URI), or "timeout {...}"
//   shot <name>                          -> "shot <path>"
//   send <text...>                       -> opens the chat with CONTACT by clicking
//                                          her roster entry, types <text> in the
//                                          textarea and presses Enter; answers
//                                          "sent {msgid, jid, stanza}" once Converse
//                                          shows it (jid: Bob's bound full JID,
//                                          stanza: the <message> frame it sent)
//   delivered <msgid>                    -> "delivered <msgid>" once that message
//                                          shows Converse's receipt check mark
//                                          (.chat-msg__receipt: a XEP-0184 <received/>
//                                          for its id arrived), or "timeout {...}"
//   reply <text...>                      -> "reply {from, text}" once the chat with
//                                          CONTACT shows a message from her with <text>
//   quit                                 -> writes every websocket frame the
//                                          browser received to SHOTS_DIR/frames.xml
//                                          (and sent, to SHOTS_DIR/sent.xml),
//                                          closes the browser -> "bye"
import { chromium } from "playwright-core";
import readline from "node:readline";
import path from "node:path";

const [url, jid, password, contact, shots, name = ""] = process.argv.slice(2);
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
const sent = [];
page.on("websocket", (ws) => {
  ws.on("framereceived", (f) => frames.push(String(f.payload)));
  ws.on("framesent", (f) => sent.push(String(f.payload)));
});
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

// Messages from CONTACT in Bob's chat with her, as Converse shows them.
async function theirMessages() {
  return page.evaluate((contact) =>
    [...document.querySelectorAll(`converse-chat[jid="${contact}"] .chat-msg`)]
      .filter((m) => m.querySelector(".chat-msg__content--them"))
      .map((m) => ({ from: m.getAttribute("data-from"), msgid: m.getAttribute("data-msgid"),
        text: m.querySelector(".chat-msg__text")?.innerText.trim() || "" })), contact);
}

// As Bob does it: click her in the roster, type, press Enter. Returns the
// msgid Converse gave the message, Bob's full JID and the stanza it sent.
async function send(text) {
  await page.locator(`converse-roster-contact a.open-chat[data-jid="${contact}"]`).click();
  const textarea = page.locator(`converse-chat[jid="${contact}"] textarea.chat-textarea`);
  await textarea.waitFor({ timeout: 10000 });
  await textarea.click();
  await textarea.pressSequentially(text, { delay: 20 });
  const before = sent.length;
  await textarea.press("Enter");
  const mine = page.locator(`converse-chat[jid="${contact}"] .chat-msg`)
    .filter({ has: page.locator(".chat-msg__content--me") }).filter({ hasText: text });
  await mine.first().waitFor({ timeout: 10000 });
  const msgid = await mine.first().getAttribute("data-msgid");
  let stanza = null;
  for (let i = 0; i < 50 && !stanza; i++) {
    stanza = sent.slice(before).find((f) => f.startsWith("<message") && f.includes(msgid)) || null;
    if (!stanza) await page.waitForTimeout(100);
  }
  const bound = frames.map((f) => f.match(/<jid>([^<]+)<\/jid>/)).find((m) => m);
  return { msgid, jid: bound && bound[1], stanza };
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
  if (name) await form.locator("input[name=name]").fill(name);
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
  const rest = line.trim().slice(cmd.length).trim();
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
  } else if (cmd === "profile") {
    // What Bob sees of her in his roster: the name and the avatar image.
    const deadline = Date.now() + 20000;
    let seen = null;
    while (Date.now() < deadline) {
      seen = await page.evaluate((contact) => {
        const item = document.querySelector(`converse-roster-contact a.open-chat[data-jid="${contact}"]`)
          ?.closest("converse-roster-contact");
        if (!item) return null;
        return { name: item.querySelector(".contact-name")?.innerText.trim() || "",
          avatar: item.querySelector("converse-avatar image")?.getAttribute("href") || "" };
      }, contact);
      if (seen && seen.name === rest && seen.avatar.startsWith("data:image")) break;
      await page.waitForTimeout(200);
    }
    say(seen && seen.name === rest && seen.avatar ? `profile ${JSON.stringify(seen)}` : `timeout ${JSON.stringify(seen)}`);
  } else if (cmd === "shot") {
    const file = path.join(shots, `${arg}.png`);
    await page.screenshot({ path: file, fullPage: true });
    say(`shot ${file}`);
  } else if (cmd === "send") {
    try {
      say(`sent ${JSON.stringify(await send(rest))}`);
    } catch (e) {
      say(`error ${String(e).split("\n")[0]}`);
    }
  } else if (cmd === "delivered") {
    const deadline = Date.now() + 15000;
    let seen = null;
    while (Date.now() < deadline) {
      seen = await page.evaluate(([contact, msgid]) => {
        const msg = document.querySelector(`converse-chat[jid="${contact}"] .chat-msg[data-msgid="${msgid}"]`);
        return msg && { receipt: !!msg.querySelector(".chat-msg__receipt"), html: msg.outerHTML.slice(0, 600) };
      }, [contact, arg]);
      if (seen?.receipt) break;
      await page.waitForTimeout(100);
    }
    say(seen?.receipt ? `delivered ${arg}` : `timeout ${JSON.stringify(seen)}`);
  } else if (cmd === "reply") {
    const deadline = Date.now() + 15000;
    let seen = [];
    while (Date.now() < deadline) {
      seen = await theirMessages();
      if (seen.some((m) => m.text.includes(rest))) break;
      await page.waitForTimeout(100);
    }
    const hit = seen.find((m) => m.text.includes(rest));
    say(hit ? `reply ${JSON.stringify(hit)}` : `timeout ${JSON.stringify(seen)}`);
  } else if (cmd === "quit") {
    break;
  }
}
const fs = await import("node:fs");
fs.writeFileSync(path.join(shots, "frames.xml"), frames.join("\n"));
fs.writeFileSync(path.join(shots, "sent.xml"), sent.join("\n"));
await browser.close();
say("bye");
// The readline interface would keep the process alive on its open stdin.
process.exit(0);
