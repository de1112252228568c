// Drives the barge web page in headless Chromium, as a person would: a desktop window and a
// phone-sized one, uploads through the file picker (several files at once, one of several MiB),
// the end-to-end MD5 verdict, download by clicking, folders, filter, sort, rename and delete.
// Screenshots go to target/browser/. Run by tests/browser/run, which starts the server.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const base = process.env.BARGE_WEB;
const work = process.env.BARGE_WORK;
const shots = process.env.BARGE_SHOTS;
const md5 = (buf) => crypto.createHash("md5").update(buf).digest("hex");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  // Files to upload: a small text file, a name with spaces and accents, and 6 MiB of noise.
  const files = {
    "notes.txt": Buffer.from("barge web test\n"),
    "résumé 2026.txt": Buffer.from("Ünïcödé name\n"),
    "big.bin": crypto.randomBytes(6 << 20),
  };
  for (const [name, body] of Object.entries(files)) fs.writeFileSync(path.join(work, name), body);

  const desktop = await browser.newContext({ ignoreHTTPSErrors: true, acceptDownloads: true,
                                             viewport: { width: 1280, height: 800 } });
  const page = await desktop.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // (The browser logs every refused request; the one 409 below is refused on purpose.)
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("status of 409")) errors.push(m.text());
  });
  await page.goto(base);
  await page.waitForSelector("#drop:not([hidden])");
  assert.match(await page.textContent("#empty"), /No files available/);

  // Upload into a folder: navigate there first, then pick three files at once.
  await page.goto(base + "?folder=photos/2026/");
  await page.setInputFiles("#picker", Object.keys(files).map((n) => path.join(work, n)));
  await page.waitForFunction(() => {
    const states = [...document.querySelectorAll("#uploads .state")].map((s) => s.textContent);
    return states.length === 3 && states.every((s) => s === "Success" || s === "Fail" || s === "refused");
  }, null, { timeout: 60000 });
  const states = await page.$$eval("#uploads .state", (s) => s.map((x) => x.textContent));
  assert.deepEqual(states, ["Success", "Success", "Success"]);
  const details = await page.$$eval("#uploads .detail", (s) => s.map((x) => x.textContent).join("\n"));
  for (const body of Object.values(files)) assert.ok(details.includes(md5(body)), details);
  await page.screenshot({ path: path.join(shots, "desktop-uploaded.png"), fullPage: true });

  // The same name again is refused with the server's words, and nothing is replaced.
  await page.setInputFiles("#picker", [path.join(work, "notes.txt")]);
  await page.waitForFunction(() => document.querySelector("#uploads .state").textContent === "refused");
  assert.match(await page.textContent("#uploads .detail"), /already exists/);

  // The listing: the folder's files, sorted by name with numbers in order; filter; sort by size.
  await page.waitForSelector("#files tbody tr");
  const names = () => page.$$eval("#files tbody td.name", (t) => t.map((x) => x.textContent));
  assert.deepEqual(await names(), ["big.bin", "notes.txt", "résumé 2026.txt"]);
  await page.click("#sort-size");
  assert.deepEqual(await names(), ["notes.txt", "résumé 2026.txt", "big.bin"]);
  await page.fill("#filter", "SUM");
  assert.deepEqual(await names(), ["résumé 2026.txt"]);
  await page.fill("#filter", "");
  await page.click("#sort-name");
  assert.deepEqual(await names(), ["big.bin", "notes.txt", "résumé 2026.txt"]);

  // Download by clicking: the bytes are the uploaded ones.
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("#files tbody tr:has-text('big.bin') a.button"),
  ]);
  assert.equal(download.suggestedFilename(), "big.bin");
  const saved = fs.readFileSync(await download.path());
  assert.equal(md5(saved), md5(files["big.bin"]));

  // Up to the top: one folder row; into it by clicking.
  await page.click("#crumbs a:first-child");
  assert.deepEqual(await names(), ["photos"]);
  await page.click("a.folder");
  assert.deepEqual(await names(), ["2026"]);

  // Rename (the prompt) and delete (the confirmation).
  await page.goto(base + "?folder=photos/2026/");
  await page.waitForSelector("#files tbody tr:has-text('notes.txt')");
  page.once("dialog", (d) => d.accept("photos/2026/renamed.txt"));
  await page.click("#files tbody tr:has-text('notes.txt') button:has-text('Rename')");
  await page.waitForSelector("#files tbody tr:has-text('renamed.txt')");
  assert.match(await page.textContent("#message"), /Renamed/);
  page.once("dialog", (d) => d.accept());
  await page.click("#files tbody tr:has-text('renamed.txt') button:has-text('Delete')");
  await page.waitForFunction(() => !document.querySelector("#files").textContent.includes("renamed.txt"));
  assert.deepEqual(await names(), ["big.bin", "résumé 2026.txt"]);
  await page.screenshot({ path: path.join(shots, "desktop.png"), fullPage: true });

  // A phone-sized window: the same page, ids hidden, nothing wider than the screen.
  const phone = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 },
                                           deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  await small.goto(base + "?folder=photos/2026/");
  await small.waitForSelector("#files tbody tr");
  const wide = await small.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(wide <= 390, `the page is ${wide}px wide on a 390px screen`);
  await small.screenshot({ path: path.join(shots, "phone.png"), fullPage: true });

  // Without JavaScript: the folder is listed by the server and a file downloads by its link.
  const noScript = await browser.newContext({ ignoreHTTPSErrors: true, javaScriptEnabled: false,
                                              acceptDownloads: true });
  const plain = await noScript.newPage();
  await plain.goto(base + "?folder=photos/2026/");
  const plainNames = await plain.$$eval("#files tbody td.name", (t) => t.map((x) => x.textContent));
  assert.deepEqual(plainNames, ["big.bin", "résumé 2026.txt"]);
  const [noJsDownload] = await Promise.all([
    plain.waitForEvent("download"),
    plain.click("#files tbody a:has-text('big.bin')"),
  ]);
  assert.equal(md5(fs.readFileSync(await noJsDownload.path())), md5(files["big.bin"]));
  await plain.click("#crumbs a:has-text('photos')");
  assert.deepEqual(await plain.$$eval("#files tbody td.name", (t) => t.map((x) => x.textContent)), ["2026"]);

  // A read-only share: no upload area, no rename or delete buttons; downloads still there.
  const ro = await desktop.newPage();
  await ro.goto(process.env.BARGE_WEB_RO);
  await ro.waitForSelector("#files tbody tr");
  assert.equal(await ro.isVisible("#drop"), false);
  assert.equal(await ro.locator("button:has-text('Delete')").count(), 0);
  assert.equal(await ro.locator("#files a.button:has-text('Download')").count(), 1);
  await ro.screenshot({ path: path.join(shots, "read-only.png"), fullPage: true });

  // A server with users: the login form, a wrong password, the right one, an upload (which
  // carries the session's CSRF token), and logging out.
  const auth = await desktop.newPage();
  auth.on("console", (m) => {
    if (m.type() === "error" && !m.text().includes("status of 401")) errors.push(m.text());
  });
  await auth.goto(process.env.BARGE_WEB_AUTH);
  await auth.waitForSelector("#login:not([hidden])");
  assert.equal(await auth.isVisible("#drop"), false);
  await auth.screenshot({ path: path.join(shots, "login.png"), fullPage: true });
  await auth.fill("input[name=user]", "alice");
  await auth.fill("input[name=password]", "wrong");
  await auth.click("#login-form button");
  await auth.waitForFunction(() => document.querySelector("#message").textContent.includes("Login incorrect"));
  await auth.fill("input[name=user]", "alice");
  await auth.fill("input[name=password]", "correct horse");
  await auth.click("#login-form button");
  await auth.waitForSelector("#drop:not([hidden])");
  assert.match(await auth.textContent("#who"), /Signed in as alice/);
  await auth.setInputFiles("#picker", [path.join(work, "notes.txt")]);
  await auth.waitForFunction(() => document.querySelector("#uploads .state").textContent === "Success");
  await auth.waitForSelector("#files tbody tr:has-text('notes.txt')");
  await auth.click("#logout");
  await auth.waitForSelector("#login:not([hidden])");
  await auth.reload();
  await auth.waitForSelector("#login:not([hidden])");
  assert.equal(await auth.locator("#files tbody tr").count(), 0);

  assert.deepEqual(errors, []);
  console.log("browser test: all checks passed; screenshots in " + shots);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
