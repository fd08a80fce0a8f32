// Browser test of the web desk, driven by tests/desk.rs:
//   node tests/js/desk_test.mjs <producer url> <consumer url> <artifacts dir>
// Debian's Chromium, headless, through playwright-core. Everything is done the way a user does
// it: log in, create users and keys, wire an Event Producer, approve, stream an Item, make a
// sync conflict, resolve it by taking the producer's version; plus list paging and filters, pt-BR, CSRF and log out.
// Screenshots of the main pages go to the artifacts dir.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [P, C, ART] = process.argv.slice(2);
if (!P || !C || !ART) {
  console.error("usage: desk_test.mjs <producer url> <consumer url> <artifacts dir>");
  process.exit(2);
}
mkdirSync(ART, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const pageErrors = [];
let current = "start";

async function newPage(locale) {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 860 }, locale: locale || "en-US" });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", (e) => pageErrors.push(`${current}: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) pageErrors.push(`${current}: console: ${m.text()}`); });
  page.on("dialog", (d) => d.accept());
  return page;
}

async function shot(page, name) {
  await page.waitForTimeout(150);
  await page.screenshot({ path: join(ART, name + ".png"), fullPage: true });
}

let failures = 0;
async function step(name, page, fn) {
  current = name;
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures++;
    console.log(`FAILED - ${name}: ${e.stack || e}`);
    if (page) await page.screenshot({ path: join(ART, "failure-" + name.replace(/\W+/g, "-") + ".png"), fullPage: true }).catch(() => {});
    throw e;
  }
}

function assert(cond, msg) { if (!cond) throw new Error("assertion failed: " + msg); }

const field = (page, name) => page.locator(`.form-layout [data-fieldname="${name}"]`).first();

async function login(page, base, usr, pwd) {
  await page.goto(base + "/app");
  await page.waitForURL(/\/login\?redirect-to=/);
  await page.fill("#login_email", usr);
  await page.fill("#login_password", pwd);
  await page.click("button[type=submit]");
  await page.waitForURL(base + "/app");
  await page.waitForSelector(".sidebar .side-item");
}

async function open(page, url, selector) {
  await page.goto(url);
  await page.waitForSelector(selector || ".page-head h1");
}

async function pickLink(page, input, text, value) {
  await input.click();
  await input.fill(text);
  const option = input.locator("xpath=..").locator(`.awesomplete li[data-value="${value}"]`);
  await option.waitFor();
  await option.click();
}

async function save(page) {
  const resp = page.waitForResponse((r) => /\/api\/resource\//.test(r.url()) && ["POST", "PUT"].includes(r.request().method()));
  await page.click('[data-action="save"]');
  const r = await resp;
  await page.waitForTimeout(100);
  return r.status();
}

async function expectSaved(page) {
  const status = await save(page);
  if (status !== 200) {
    const msg = await page.locator('[data-role="form-error"]').textContent().catch(() => "");
    throw new Error(`save answered ${status}: ${msg}`);
  }
}

async function createUserWithKeys(page, base, email, extra) {
  await open(page, base + "/app/user/new", '[data-fieldname="email"]');
  await field(page, "email").locator("input").fill(email);
  await field(page, "first_name").locator("input").fill("Sync");
  const roles = field(page, "roles");
  await roles.locator('[data-action="add-row"]').click();
  await pickLink(page, roles.locator('.grid-row [data-fieldname="role"] input').first(), "System", "System Manager");
  if (extra) await extra();
  await expectSaved(page);
  await page.waitForURL(base + "/app/user/" + encodeURIComponent(email));
  await page.click('[data-action="generate-keys"]');
  await page.waitForSelector("#api-secret");
  const secret = await page.inputValue("#api-secret");
  const key = await page.inputValue("#api-key");
  assert(secret.length >= 10 && key.length >= 10, "keys shown");
  return { key, secret };
}

async function createItem(page, base, code, group) {
  await open(page, base + "/app/item/new", '[data-fieldname="item_code"]');
  await field(page, "item_code").locator("input").fill(code);
  await field(page, "item_name").locator("input").fill("Item " + code);
  await pickLink(page, field(page, "item_group").locator("input"), group.slice(0, 4), group);
  await field(page, "standard_rate").locator("input").fill("12.5");
  await expectSaved(page);
  await page.waitForURL(base + "/app/item/" + code);
}

async function createItemGroup(page, base, name) {
  await open(page, base + "/app/item-group/new", '[data-fieldname="item_group_name"]');
  await field(page, "item_group_name").locator("input").fill(name);
  await expectSaved(page);
}

/** Reloads `url` until `selector` shows up (streaming is asynchronous). */
async function eventually(page, url, selector, seconds) {
  const deadline = Date.now() + (seconds || 20) * 1000;
  for (;;) {
    await page.goto(url);
    await page.waitForSelector(".page-head h1");
    await page.waitForTimeout(200);
    if (await page.locator(selector).count()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${selector} on ${url}`);
    await page.waitForTimeout(700);
  }
}

const p = await newPage();
const c = await newPage();
let pKeys;
let cKeys;

try {
  await step("visitor is sent to the login page, wrong password refused", p, async () => {
    await p.goto(P + "/app/item");
    await p.waitForURL(/\/login\?redirect-to=%2Fapp%2Fitem/);
    await shot(p, "01-login");
    await p.fill("#login_email", "Administrator");
    await p.fill("#login_password", "wrong");
    await p.click("button[type=submit]");
    await p.waitForSelector("#login-error:not([hidden])");
    assert(/wrong/i.test(await p.textContent("#login-error")), "error shown");
  });

  await step("log in on both sites", p, async () => {
    await login(p, P, "Administrator", "admin");
    await login(c, C, "Administrator", "admin");
    const automation = await p.locator(".side-label", { hasText: "Automation" }).count();
    assert(automation === 1, "Automation group in the sidebar");
    const group = p.locator(".side-group", { has: p.locator(".side-label", { hasText: "Automation" }) });
    for (const t of ["Event Producer", "Event Consumer", "Event Update Log", "Event Sync Log", "Document Type Mapping"]) {
      assert(await group.locator(".side-item", { hasText: new RegExp("^" + t + "$") }).count() === 1, t + " under Automation");
    }
    await shot(p, "02-home");
  });

  await step("create the Event Subscriber and generate keys on the producer", p, async () => {
    pKeys = await createUserWithKeys(p, P, "sync@example.com");
    await shot(p, "03-user-generate-keys");
    await p.click('[data-action="dialog-done"]');
    // The secret is shown once: the form shows it masked afterwards.
    await p.reload();
    await p.waitForSelector('[data-fieldname="api_key"]');
    assert(!(await p.content()).includes(pKeys.secret), "secret not shown again");
  });

  await step("create the Event Subscriber (pt-BR) with keys on the consumer", c, async () => {
    cKeys = await createUserWithKeys(c, C, "sync@example.com", async () => {
      await field(c, "language").locator("select").selectOption("pt-BR");
      await field(c, "new_password").locator("input").fill("sync-pass-1");
    });
    await c.click('[data-action="dialog-done"]');
  });

  await step("Event Producer with a wrong secret shows the handshake error", c, async () => {
    await open(c, C + "/app/event-producer/new", '[data-fieldname="producer_url"]');
    await field(c, "producer_url").locator("input").fill(P);
    const rows = field(c, "producer_doctypes");
    await rows.locator('[data-action="add-row"]').click();
    await pickLink(c, rows.locator('.grid-row [data-fieldname="ref_doctype"] input').first(), "Item", "Item");
    await rows.locator('.grid-row [data-fieldname="use_same_name"] input').first().check();
    await pickLink(c, field(c, "user").locator("input"), "sync", "sync@example.com");
    await field(c, "api_key").locator("input").fill(pKeys.key);
    await field(c, "api_secret").locator("input").fill("not-the-secret");
    const status = await save(c);
    assert(status === 417, "handshake refused, got " + status);
    await c.waitForSelector('[data-role="form-error"]');
    const msg = await c.textContent('[data-role="form-error"]');
    assert(/refused|key|secret/i.test(msg), "error names the problem: " + msg);
    await shot(c, "04-event-producer-handshake-error");
  });

  await step("Event Producer with the right keys registers on the producer", c, async () => {
    await field(c, "api_secret").locator("input").fill(pKeys.secret);
    await expectSaved(c);
    await c.waitForSelector('[data-role="form-success"]');
    assert(/Connected/.test(await c.textContent('[data-role="form-success"]')), "handshake result shown");
    assert(await c.locator('[data-fieldname="producer_doctypes"] .pill', { hasText: "Pending" }).count() === 1, "row Pending");
    await shot(c, "05-event-producer-registered");
  });

  await step("approve the Item row on the producer's Event Consumer", p, async () => {
    await open(p, P + "/app/event-consumer", "tr[data-name]");
    await shot(p, "06-event-consumer-list");
    await p.click(`tr[data-name="${C}"] a`);
    await p.waitForSelector('[data-action="approve"]');
    await p.click('[data-action="approve"]');
    await p.waitForSelector('[data-role="form-success"]');
    assert((await p.inputValue('[data-fieldname="consumer_doctypes"] .grid-row select')) === "Approved", "row Approved");
    await shot(p, "07-event-consumer-approved");
    await eventually(c, C + "/app/event-producer/" + encodeURIComponent(P), '[data-fieldname="producer_doctypes"] .pill:text("Approved")');
  });

  await step("validation error is shown next to the field", p, async () => {
    await createItemGroup(p, P, "Desk Products");
    await open(p, P + "/app/item/new", '[data-fieldname="item_code"]');
    await pickLink(p, field(p, "item_group").locator("input"), "Desk", "Desk Products");
    await save(p);
    await p.waitForSelector('[data-fieldname="item_code"] .field-error:not([hidden])');
    await shot(p, "08-validation-error");
  });

  await step("an Item created on the producer appears on the consumer", c, async () => {
    await createItem(p, P, "DESK-001", "Desk Products");
    await shot(p, "09-item-on-producer");
    await eventually(c, C + "/app/item", 'tr[data-name="DESK-001"]');
    await shot(c, "10-item-list-on-consumer");
    await c.click('tr[data-name="DESK-001"] a');
    await c.waitForSelector('[data-fieldname="item_name"] input');
    assert((await c.inputValue('[data-fieldname="item_name"] input')) === "Item DESK-001", "item name synced");
  });

  await step("a sync that fails is listed and shown on the dashboard", c, async () => {
    // A local Item with the same name and another group makes the incoming Create a
    // conflict (use_same_name): the local one is kept until a person chooses.
    await createItemGroup(c, C, "Local Group");
    await createItem(c, C, "DESK-CLASH", "Local Group");
    await createItem(p, P, "DESK-CLASH", "Desk Products");
    await eventually(c, C + "/app/event-sync-log?status=Failed", "tr[data-name]");
    await shot(c, "11-sync-log-failed-list");
    await open(c, C + "/app/" + "streaming-dashboard", '[data-role="failures"]');
    assert(/1/.test(await c.textContent('[data-role="failures"]')), "one failure counted");
    assert(/1/.test(await c.textContent('[data-role="conflicts"]')), "one conflict to resolve");
    // The consumer's scheduled backups cannot write their folder: shown, not only logged.
    const failing = await c.textContent('[data-role="backup-error"]');
    assert(/Backups failing: \d+ in a row/.test(failing) && failing.includes("/dev/null/backups"), "failing backups shown: " + failing);
    await shot(c, "12-dashboard-consumer");
    await c.click('[data-role="failures"]');
    await c.waitForSelector("tr[data-name]");
    assert(/status=Failed/.test(c.url()) && /event_producer=/.test(c.url()), "link to the failures: " + c.url());
  });

  await step("the conflict shows both versions, and the local Item is untouched", c, async () => {
    await c.click("tr[data-name] a");
    await c.waitForSelector('[data-role="conflict"] tr[data-field="item_group"]');
    const row = await c.textContent('[data-role="conflict"] tr[data-field="item_group"]');
    assert(row.includes("Local Group") && row.includes("Desk Products"), "both values shown: " + row);
    assert(await c.locator('[data-action="resync"]').count() === 0, "a conflict is resolved, not resynced");
    await shot(c, "13-sync-log-conflict");
    const logUrl = c.url();
    await open(c, C + "/app/item/DESK-CLASH", '[data-fieldname="item_group"]');
    assert((await c.inputValue('[data-fieldname="item_group"] input')) === "Local Group", "local Item kept");
    await open(c, logUrl, '[data-action="take-producer"]');
  });

  await step("take the producer's version: Synced, recorded, and the Item is the producer's", c, async () => {
    await c.click('[data-action="take-producer"]');
    await c.waitForSelector('[data-role="form-success"]:has-text("Synced")');
    assert(/Administrator took the producer's version of .*item_group/.test(await c.textContent('[data-role="conflict"]')), "who chose what is shown");
    await shot(c, "14-sync-log-conflict-resolved");
    await open(c, C + "/app/item/DESK-CLASH", '[data-fieldname="item_group"]');
    assert((await c.inputValue('[data-fieldname="item_group"] input')) === "Desk Products", "producer's Item applied");
  });

  await step("producer dashboard and update log with its consumers", p, async () => {
    await open(p, P + "/app/streaming-dashboard", `tr[data-url="${C}"]`);
    assert(await p.locator(`tr[data-url="${C}"] .pill`, { hasText: "Active" }).count() === 1, "consumer Active");
    const backups = await p.textContent('[data-role="backups"]');
    assert(/Last backup: .*docstream-backup/.test(backups) && !/failing/.test(backups), "producer's backups shown: " + backups);
    await shot(p, "15-dashboard-producer");
    await open(p, P + "/app/event-update-log?ref_doctype=Item", "tr[data-name]");
    await shot(p, "16-event-update-log-list");
    const first = await p.locator("tr[data-name]").last().getAttribute("data-name");
    await eventually(p, P + "/app/event-update-log/" + first, `[data-role="consumers"] .chip:text("${C}")`);
    const pre = await p.textContent('[data-fieldname="data"] pre');
    assert(pre.includes('\n  "item_code"') || pre.includes('\n  "changed"'), "data pretty-printed: " + pre.slice(0, 80));
    await shot(p, "17-event-update-log");
  });

  await step("list view: counts, paging, filters, sort", p, async () => {
    await p.evaluate(async () => {
      const boot = JSON.parse(document.getElementById("boot").textContent);
      const docs = [];
      for (let i = 1; i <= 45; i++) docs.push({ doctype: "ToDo", description: "Task " + i, priority: i % 3 === 0 ? "High" : "Low" });
      const r = await fetch("/api/method/frappe.client.insert_many", { method: "POST", headers: { "Content-Type": "application/json", "X-Frappe-CSRF-Token": boot.csrf_token }, body: JSON.stringify({ docs }) });
      if (!r.ok) throw new Error("insert_many " + r.status);
    });
    await open(p, P + "/app/todo", "tr[data-name]");
    await p.waitForSelector('.count-badge:text("45 records")');
    assert(await p.locator("tr[data-name]").count() === 20, "first page has 20 rows");
    await p.click('[data-action="next-page"]');
    await p.waitForSelector('[data-role="range"]:text("21–40 of 45")');
    await p.click('[data-action="add-filter"]');
    await p.selectOption(".filter-form select >> nth=0", "priority");
    await p.fill(".filter-form input", "High");
    await p.click('[data-action="apply-filter"]');
    await p.waitForSelector('.count-badge:text("15 records")');
    assert(/priority=High/.test(p.url()), "filter kept in the URL");
    await p.click('[data-action="sort-order"]');
    await p.waitForSelector('.count-badge:text("15 records")');
    await shot(p, "18-list-view-filtered");
  });

  await step("non-GET without the CSRF token is refused", p, async () => {
    const res = await p.evaluate(async () => {
      const boot = JSON.parse(document.getElementById("boot").textContent);
      const body = JSON.stringify({ description: "csrf" });
      const no = await fetch("/api/resource/ToDo", { method: "POST", headers: { "Content-Type": "application/json" }, body });
      const bad = await fetch("/api/resource/ToDo", { method: "POST", headers: { "Content-Type": "application/json", "X-Frappe-CSRF-Token": "nope" }, body });
      const ok = await fetch("/api/resource/ToDo", { method: "POST", headers: { "Content-Type": "application/json", "X-Frappe-CSRF-Token": boot.csrf_token }, body });
      return [no.status, (await no.json()).exc_type, bad.status, ok.status];
    });
    assert(res[0] === 400 && res[1] === "CSRFTokenError" && res[2] === 400 && res[3] === 200, "CSRF: " + JSON.stringify(res));
  });

  await step("form of a type created at run time: every field type, rows, submit and cancel", p, async () => {
    await p.evaluate(async () => {
      const boot = JSON.parse(document.getElementById("boot").textContent);
      const post = async (doc) => {
        const r = await fetch("/api/resource/DocType", { method: "POST", headers: { "Content-Type": "application/json", "X-Frappe-CSRF-Token": boot.csrf_token }, body: JSON.stringify(doc) });
        if (!r.ok) throw new Error("DocType " + doc.name + ": " + (await r.text()));
      };
      const perms = [{ role: "System Manager", read: 1, write: 1, create: 1, delete: 1, submit: 1, cancel: 1 }];
      await post({ name: "Desk Gadget Part", module: "Custom", istable: 1, fields: [
        { fieldname: "part", label: "Part", fieldtype: "Link", options: "Item", reqd: 1, in_list_view: 1 },
        { fieldname: "qty", label: "Qty", fieldtype: "Float", in_list_view: 1 },
        { fieldname: "note", label: "Note", fieldtype: "Small Text" }] });
      await post({ name: "Desk Gadget Tag", module: "Custom", istable: 1, fields: [
        { fieldname: "role", label: "Role", fieldtype: "Link", options: "Role", in_list_view: 1 }] });
      await post({ name: "Desk Gadget", module: "Custom", is_submittable: 1, title_field: "title", permissions: perms, fields: [
        { fieldname: "title", label: "Title", fieldtype: "Data", reqd: 1, in_list_view: 1 },
        { fieldname: "kind", label: "Kind", fieldtype: "Select", options: "Small\nLarge", in_list_view: 1 },
        { fieldname: "quantity", label: "Quantity", fieldtype: "Int", in_list_view: 1 },
        { fieldname: "weight", label: "Weight", fieldtype: "Float" },
        { fieldname: "price", label: "Price", fieldtype: "Currency", in_list_view: 1 },
        { fieldname: "share", label: "Share", fieldtype: "Percent" },
        { fieldname: "active", label: "Active", fieldtype: "Check" },
        { fieldname: "cb1", fieldtype: "Column Break" },
        { fieldname: "day", label: "Day", fieldtype: "Date" },
        { fieldname: "at", label: "At", fieldtype: "Datetime" },
        { fieldname: "clock", label: "Clock", fieldtype: "Time" },
        { fieldname: "file", label: "File", fieldtype: "Attach" },
        { fieldname: "secret", label: "Secret", fieldtype: "Password" },
        { fieldname: "shown", label: "Shown", fieldtype: "Read Only" },
        { fieldname: "links", label: "Links", fieldtype: "Section Break" },
        { fieldname: "item", label: "Item", fieldtype: "Link", options: "Item" },
        { fieldname: "ref_type", label: "Reference Type", fieldtype: "Link", options: "DocType" },
        { fieldname: "ref_name", label: "Reference Name", fieldtype: "Dynamic Link", options: "ref_type" },
        { fieldname: "parts", label: "Parts", fieldtype: "Table", options: "Desk Gadget Part" },
        { fieldname: "tags", label: "Tags", fieldtype: "Table MultiSelect", options: "Desk Gadget Tag" },
        { fieldname: "texts", label: "Texts", fieldtype: "Tab Break" },
        { fieldname: "notes", label: "Notes", fieldtype: "Small Text" },
        { fieldname: "body", label: "Body", fieldtype: "Text" },
        { fieldname: "long", label: "Long", fieldtype: "Long Text" },
        { fieldname: "editor", label: "Editor", fieldtype: "Text Editor" },
        { fieldname: "code", label: "Code", fieldtype: "Code" },
        { fieldname: "meta", label: "Meta", fieldtype: "JSON" }] });
    });
    await open(p, P + "/app/desk-gadget/new", '[data-fieldname="title"]');
    for (const t of ["Data", "Select", "Int", "Float", "Currency", "Percent", "Check", "Date", "Datetime", "Time", "Attach", "Password", "Read Only",
      "Link", "Dynamic Link", "Table", "Table MultiSelect", "Small Text", "Text", "Long Text", "Text Editor", "Code", "JSON"]) {
      assert(await p.locator(`.form-layout [data-fieldtype="${t}"]`).count() >= 1, "control for " + t);
    }
    await field(p, "title").locator("input").fill("Gadget one");
    await field(p, "quantity").locator("input").fill("many");
    assert(await save(p) === 417, "bad Int refused");
    await p.waitForSelector('[data-fieldname="quantity"] .field-error:not([hidden])');
    await field(p, "quantity").locator("input").fill("3");
    await field(p, "kind").locator("select").selectOption("Large");
    await field(p, "weight").locator("input").fill("1.5");
    await field(p, "price").locator("input").fill("9.99");
    await field(p, "share").locator("input").fill("12.5");
    await field(p, "active").locator("input").check();
    await field(p, "day").locator("input").fill("2026-05-04");
    await field(p, "at").locator("input").fill("2026-05-04T10:20:30");
    await field(p, "clock").locator("input").fill("10:20:30");
    await field(p, "secret").locator("input").fill("s3cret");
    await pickLink(p, field(p, "item").locator("input"), "DESK", "DESK-001");
    await pickLink(p, field(p, "ref_type").locator("input"), "Item", "Item");
    await pickLink(p, field(p, "ref_name").locator("input"), "DESK-0", "DESK-001");
    const parts = field(p, "parts");
    await parts.locator('[data-action="add-row"]').click();
    await pickLink(p, parts.locator('.grid-row [data-fieldname="part"] input').nth(0), "DESK", "DESK-001");
    await parts.locator('.grid-row [data-fieldname="qty"] input').nth(0).fill("2");
    await parts.locator('[data-action="add-row"]').click();
    assert(await parts.locator(".grid-row").count() === 2, "two rows");
    await parts.locator(".grid-row").nth(1).locator(".grid-check input").check();
    await parts.locator('[data-action="delete-rows"]').click();
    assert(await parts.locator(".grid-row").count() === 1, "row removed");
    const tags = field(p, "tags");
    await tags.locator('[data-action="add-row"]').click();
    await pickLink(p, tags.locator('.grid-row [data-fieldname="role"] input').nth(0), "System", "System Manager");
    await p.click(".tab >> nth=1");
    await field(p, "code").locator("textarea").fill("print('hi')");
    await field(p, "meta").locator("textarea").fill('{"a": 1}');
    await field(p, "notes").locator("textarea").fill("Some notes");
    await p.click(".tab >> nth=0");
    await shot(p, "21-custom-doctype-new");
    await expectSaved(p);
    await p.waitForURL(new RegExp("/app/desk-gadget/[a-z0-9]+$"));
    assert((await field(p, "at").locator("input").inputValue()) === "2026-05-04T10:20:30", "datetime kept");
    assert(await field(p, "parts").locator(".grid-row").count() === 1, "child row saved");
    await p.click('[data-action="submit"]');
    await p.waitForSelector('.page-head .pill:text("Submitted")');
    assert(await field(p, "title").locator("input").count() === 0, "read-only after submit");
    await shot(p, "22-custom-doctype-submitted");
    await p.click('[data-action="cancel"]');
    await p.waitForSelector('.page-head .pill:text("Cancelled")');
    await open(p, P + "/app/desk-gadget", 'tr[data-name]');
    await shot(p, "23-custom-doctype-list");
  });

  await step("a Sales Invoice as a user makes it: date, rate, amounts and totals fill in; save; submit", p, async () => {
    await open(p, P + "/app/customer/new", '[data-fieldname="customer_name"]');
    await field(p, "customer_name").locator("input").fill("Desk Customer");
    await expectSaved(p);
    await open(p, P + "/app/sales-invoice/new", '[data-fieldname="customer"]');
    const d = new Date();
    const today = d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
    assert((await field(p, "posting_date").locator("input").inputValue()) === today, "posting date defaults to today");
    await pickLink(p, field(p, "customer").locator("input"), "Desk", "Desk Customer");
    const items = field(p, "items");
    await items.locator('[data-action="add-row"]').click();
    await pickLink(p, items.locator('.grid-row [data-fieldname="item_code"] input').first(), "DESK-0", "DESK-001");
    const rate = items.locator('.grid-row [data-fieldname="rate"] input').first();
    await p.waitForFunction((el) => el.value === "12.5", await rate.elementHandle(), { timeout: 5000 });
    await items.locator('.grid-row [data-fieldname="qty"] input').first().fill("3");
    const amount = items.locator('.grid-row [data-fieldname="amount"] .static-value').first();
    await p.waitForFunction((el) => el.textContent.includes("37.5"), await amount.elementHandle(), { timeout: 5000 });
    assert((await field(p, "grand_total").textContent()).includes("37.5"), "grand total as the user types");
    await shot(p, "24-sales-invoice-typed");
    await expectSaved(p);
    await p.waitForURL(new RegExp("/app/sales-invoice/SINV-"));
    assert((await field(p, "total").textContent()).includes("37.5"), "total saved by the server");
    await p.click('[data-action="submit"]');
    await p.waitForSelector('.page-head .pill:text("Submitted")');
    await shot(p, "25-sales-invoice-submitted");
  });

  await step("a pt-BR user sees Portuguese; the browser language decides before login", null, async () => {
    const pt = await newPage("en-US");
    await login(pt, C, "sync@example.com", "sync-pass-1");
    assert(await pt.locator(".side-label", { hasText: "Automação" }).count() === 1, "sidebar in Portuguese");
    await open(pt, C + "/app/item/new", '[data-action="save"]');
    assert((await pt.textContent('[data-action="save"]')) === "Salvar", "Save is Salvar");
    assert(await pt.locator(".field-label", { hasText: "Código do item" }).count() === 1, "field label translated");
    await shot(pt, "19-pt-br-form");
    await open(pt, C + "/app/streaming-dashboard", ".stats");
    await shot(pt, "20-pt-br-dashboard");
    await pt.context().close();
    const visitor = await newPage("pt-BR");
    await visitor.goto(C + "/login");
    assert((await visitor.textContent(".login-card h2")) === "Entre no seu site", "login page in Portuguese");
    await visitor.context().close();
  });

  await step("Pull Now on the consumer, then Reject on the producer stops the flow", p, async () => {
    await open(c, C + "/app/event-producer/" + encodeURIComponent(P), '[data-action="pull-now"]');
    await c.click('[data-action="pull-now"]');
    await c.waitForSelector('[data-role="form-success"]:has-text("updates applied")');
    await open(p, P + "/app/event-consumer/" + encodeURIComponent(C), '[data-action="reject"]');
    await p.click('[data-action="reject"]');
    await p.waitForSelector('[data-role="form-success"]');
    assert((await p.inputValue('[data-fieldname="consumer_doctypes"] .grid-row select')) === "Rejected", "row Rejected");
    await eventually(c, C + "/app/event-producer/" + encodeURIComponent(P), '[data-fieldname="producer_doctypes"] .pill:text("Rejected")');
    await createItem(p, P, "DESK-AFTER-REJECT", "Desk Products");
    await open(c, C + "/app/event-producer/" + encodeURIComponent(P), '[data-action="pull-now"]');
    await c.click('[data-action="pull-now"]');
    await c.waitForSelector('[data-role="form-success"]:has-text("0 updates applied")');
    await open(c, C + "/app/item", 'tr[data-name="DESK-001"]');
    assert(await c.locator('tr[data-name="DESK-AFTER-REJECT"]').count() === 0, "a rejected type leaks nothing");
    await shot(c, "24-after-reject");
  });

  await step("log out", p, async () => {
    await p.click('[data-action="user-menu"]');
    await p.click('[data-action="logout"]');
    await p.waitForURL(P + "/login");
    await p.goto(P + "/app");
    await p.waitForURL(/\/login/);
  });

  assert(pageErrors.length === 0, "page errors:\n" + pageErrors.join("\n"));
  console.log("desk steps passed");
} catch (e) {
  if (pageErrors.length) console.log("page errors:\n" + pageErrors.join("\n"));
  console.log(`desk test failed (${failures} failed step): ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
