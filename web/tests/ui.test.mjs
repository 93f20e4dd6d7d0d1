// The web environment manager in a real browser (Debian's Chromium driven by playwright-core)
// against the real daemon and real instance processes: sign in, create an environment from the
// form with one app on another build type, watch it become ready, see the diff, kill an
// instance and see it go red and back to green without a reload, read its log tail, and a
// viewer's button press refused.
//
// Environment: BERTH_BIN (the berth binary), DEMO_SVC_DIR (where berth-demo-svc is),
// CHROMIUM (default /usr/bin/chromium), BERTH_SCREENSHOTS (a directory: screenshots of the
// main pages are written there, as in docs/screenshots/). Nothing sleeps for state: every wait
// polls a condition with a deadline.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const BIN = process.env.BERTH_BIN;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = process.env.BERTH_SCREENSHOTS;
const FLEET = `network: {pool: 127.114.0.0/24, exclude: [127.114.0.1]}
defaults:
  command: berth-demo-svc --listen \${ip}:\${port.http}
  ports: {http: 8080}
  health: {type: http, port: http, path: /healthcheck, start_interval: 50ms, interval: 500ms, failure_threshold: 1}
  restart: {backoff: 300ms}
apps:
  users: {}
  payments: {depends_on: [users]}
  orders: {depends_on: [users, payments]}
environments:
  baseline: {}
`;

async function until(what, fn, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let dir, daemon, addr, admin, browser;

async function call(token, method, path, body) {
  const res = await fetch(`http://${addr}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${json.error}`);
  return json;
}

before(async () => {
  if (!BIN || !existsSync(CHROMIUM)) return;
  dir = mkdtempSync(join(tmpdir(), "berth-ui-"));
  daemon = spawn(BIN, ["serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0"], {
    env: { ...process.env, PATH: `${process.env.DEMO_SVC_DIR}:${process.env.PATH}` },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  daemon.stderr.on("data", (d) => (log += d));
  await until(`the daemon (log: ${log})`, async () => existsSync(join(dir, "api.addr")), 10_000);
  addr = readFileSync(join(dir, "api.addr"), "utf8").trim();
  admin = readFileSync(join(dir, "admin.token"), "utf8").trim();
  await call(admin, "PUT", "/v1/catalog", { filename: "berth.yaml", text: FLEET });
  await call(admin, "POST", "/v1/environments/baseline/up");
  await until("baseline ready", async () => (await call(admin, "GET", "/v1/environments/baseline")).ready);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  if (addr) {
    for (const e of ["dev-anna", "baseline"])
      await call(admin, "POST", `/v1/environments/${e}/down?force=1`).catch(() => {});
    await until("everything stopped", async () => {
      const all = await call(admin, "GET", "/v1/environments");
      return all.every((e) => e.apps.every((a) => a.instances.every((i) => i.state === "stopped" || !i.pid)));
    }, 20_000).catch(() => {});
  }
  daemon?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function signIn(page, token) {
  await page.goto(`http://${addr}/`);
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("header .who");
}

const shot = async (page, name) => SHOTS && page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

test("a member creates an environment in the browser and watches it live", { skip: !BIN || !existsSync(CHROMIUM) }, async () => {
  const member = (await call(admin, "POST", "/v1/tokens", { user: "anna", role: "member" })).token;
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));

  // A wrong token is refused on the sign-in page.
  await page.goto(`http://${addr}/`);
  await page.fill("input[name=token]", "berth_wrong");
  await page.click("button[type=submit]");
  assert.match(await page.textContent("[role=alert]"), /not one this daemon issued/);

  await signIn(page, member);
  assert.match(await page.textContent("header .who"), /anna \(member\)/);
  await page.waitForSelector("tr[data-env=baseline]");
  assert.match(await page.textContent("tr[data-env=baseline]"), /ready/);
  await shot(page, "environments");

  // The form: base baseline, thin, orders on build type debug.
  await page.click("text=New environment");
  await page.fill("input[name=name]", "dev-anna");
  await page.waitForSelector("input[name='orders.build_type']");
  await page.fill("input[name='orders.build_type']", "debug");
  await shot(page, "create");
  await page.click("form.create button[type=submit]");
  await page.waitForSelector("h2:has-text('dev-anna')");

  // Up, from the page; it becomes ready without a reload.
  await page.click("button:has-text('Up')");
  await page.waitForSelector("h2 .state.ready", { timeout: 30_000 });
  const ordersRow = "table.apps tr[data-app=orders]";
  assert.match(await page.textContent(`${ordersRow} td:nth-child(4)`), /debug/);
  assert.equal(await page.getAttribute(`${ordersRow} td:nth-child(4)`, "class"), "differs");
  assert.match(await page.textContent(`${ordersRow} td:nth-child(5)`), /dev-anna/);
  // users falls through to baseline.
  assert.match(await page.textContent("table.apps tr[data-app=users]"), /→ baseline/);
  await shot(page, "environment");

  // The diff names the setting and both layers.
  await page.click("nav.tabs button:has-text('diff')");
  const diff = await page.textContent("table.diff");
  assert.match(diff, /build_type/);
  assert.match(diff, /debug/);
  assert.match(diff, /release/);
  await page.click("nav.tabs button:has-text('graph')");
  await page.waitForSelector(".graph .node[data-app=orders].ok");
  await shot(page, "graph");
  await page.click("nav.tabs button:has-text('apps')");

  // Kill the instance: its row goes red (or waiting) and back to green, the page never reloads.
  await page.evaluate((sel) => {
    window.__states = [];
    const watch = () => {
      const s = document.querySelector(`${sel} [data-state]`)?.getAttribute("data-state");
      if (s && window.__states.at(-1) !== s) window.__states.push(s);
    };
    new MutationObserver(watch).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    window.__loaded = performance.timeOrigin;
  }, ordersRow);
  const status = await call(member, "GET", "/v1/environments/dev-anna");
  const pid = status.apps.find((a) => a.app === "orders").instances[0].pid;
  assert.ok(pid > 0);
  process.kill(pid, "SIGKILL");
  await page.waitForFunction(() => window.__states.some((s) => s !== "ready"), null, { timeout: 15_000 });
  await page.waitForFunction(() => window.__states.at(-1) === "ready", null, { timeout: 30_000 });
  await page.waitForSelector(`${ordersRow} .instance:has-text('1 restarts')`);
  assert.ok(await page.evaluate(() => window.__loaded === performance.timeOrigin), "the page was not reloaded");

  // The log tail of the instance, following.
  await page.click(`${ordersRow} .instance button:has-text('log')`);
  await until("the log tail", async () => /listening on/.test((await page.textContent(".log pre")) ?? ""));

  // Events timeline has the crash.
  await page.click("nav.tabs button:has-text('events')");
  await page.waitForSelector("ol.events li");
  assert.match(await page.textContent("ol.events"), /orders/);

  // The edit form: a wrong value is refused with its place in the document; a right one saved.
  await page.click("nav.tabs button:has-text('edit')");
  const yaml = "base: baseline\ndeploy: changed\nexpires: 2030-01-01T00:00:00Z\napps:\n  orders: {build_type: debug, instances: many}\n";
  await page.fill("form.edit textarea", yaml);
  await page.click("form.edit button[type=submit]");
  assert.match(await page.textContent("form.edit [role=alert]"), /environments\/dev-anna\.yaml:5:/);
  await page.fill("form.edit textarea", yaml.replace("many", "1") + "description: from the browser\n");
  await page.click("form.edit button[type=submit]");
  await page.waitForSelector("p.meta:has-text('version 2')");
  assert.match((await call(member, "GET", "/v1/environments/dev-anna/document")).text, /from the browser/);
  assert.deepEqual(pageErrors, []);
  await context.close();
});

test("a viewer's button press is refused with the reason", { skip: !BIN || !existsSync(CHROMIUM) }, async () => {
  const viewer = (await call(admin, "POST", "/v1/tokens", { user: "vic", role: "viewer" })).token;
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, viewer);
  await page.goto(`http://${addr}/#/env/baseline`);
  await page.waitForSelector("h2:has-text('baseline')");
  await page.click("button:has-text('Down')");
  assert.match(await page.textContent("[role=alert]"), /vic is a viewer/);
  assert.equal((await call(admin, "GET", "/v1/environments/baseline")).up, true);
  await context.close();
});
