// docstream desk: renders list, form and dashboard views from the REST API.
// No framework and no build step: this file is served as is from the binary.
(() => {
  "use strict";

  const boot = JSON.parse(document.getElementById("boot").textContent);
  const MESSAGES = boot.messages || {};
  /** Translates an English text; `{0}`, `{1}` are replaced by the arguments. */
  const __ = (text, ...args) => {
    let t = MESSAGES[text] || text;
    args.forEach((a, i) => { t = t.split("{" + i + "}").join(String(a)); });
    return t;
  };
  const LANG = boot.lang || "en";
  const NUM = new Intl.NumberFormat(LANG);
  const MONEY = new Intl.NumberFormat(LANG, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  // Offset between the browser's clock and the site's, for "3 min ago".
  const CLOCK_SKEW = boot.now ? Date.now() - parseTs(boot.now) : 0;
  const DASHBOARD = "streaming-dashboard";
  // Types whose documents are written by the server only: shown read-only.
  const SERVER_WRITTEN = ["Event Update Log", "Event Sync Log", "Event Producer Last Update"];
  const LAYOUT = ["Section Break", "Column Break", "Tab Break"];
  // Frappe's fields without a value: layout, child tables, and display-only types.
  const DISPLAY_ONLY = ["Button", "Fold", "Heading", "HTML", "Image"];
  const NO_VALUE = [...LAYOUT, "Table", "Table MultiSelect", ...DISPLAY_ONLY];

  // ---------- small helpers ----------

  /** Creates an element: h("div", {class: "x", onclick: f}, child, [children], "text"). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "value") el.value = v;
      else if (k === "checked") el.checked = !!v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  /** Replaces an element's children; nulls are skipped and arrays flattened. */
  function setChildren(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }
  const slug = (dt) => dt.toLowerCase().split(" ").join("-");
  const docUrl = (dt, name) => "/app/" + slug(dt) + "/" + encodeURIComponent(name);
  const listUrl = (dt, query) => "/app/" + slug(dt) + (query ? "?" + query : "");
  function parseTs(s) {
    if (!s) return NaN;
    const m = String(s).match(/^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?/);
    if (!m) return NaN;
    return new Date(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0),
      m[7] ? +m[7].slice(0, 3).padEnd(3, "0") : 0).getTime();
  }
  function ago(ts) {
    const t = parseTs(ts);
    if (isNaN(t)) return "";
    const d = Math.round((Date.now() - CLOCK_SKEW - t) / 1000);
    if (d < -45) {
      // In the future (a retry time): say when.
      if (-d < 3600) return __("in {0} min", Math.round(-d / 60));
      if (-d < 86400) return __("in {0} h", Math.round(-d / 3600));
      return String(ts).slice(0, 16);
    }
    const s = Math.max(0, d);
    if (s < 45) return __("just now");
    if (s < 3600) return __("{0} min ago", Math.round(s / 60));
    if (s < 86400) return __("{0} h ago", Math.round(s / 3600));
    if (s < 86400 * 30) return __("{0} d ago", Math.round(s / 86400));
    return String(ts).slice(0, 10);
  }
  function timeEl(ts) {
    return ts ? h("time", { title: String(ts).slice(0, 19), datetime: String(ts) }, ago(ts)) : h("span", { class: "muted" }, "—");
  }
  const STATUS_COLORS = {
    green: ["Synced", "Approved", "Active", "Submitted", "Open", "Enabled", "Completed", "Closed", "Connected", "Resolved"],
    red: ["Failed", "Rejected", "Cancelled", "Unreachable", "History changed", "Differences found", "Condition fails", "Disabled", "High"],
    orange: ["Pending", "Pending approval", "Draft", "Not Saved", "Medium", "Waiting"],
  };
  function pill(text, color) {
    if (!color) {
      color = "gray";
      for (const [c, words] of Object.entries(STATUS_COLORS)) if (words.includes(text)) color = c;
    }
    return h("span", { class: "pill pill-" + color }, __(text));
  }
  function toast(message, kind) {
    let box = document.querySelector(".toasts");
    if (!box) { box = h("div", { class: "toasts" }); document.body.append(box); }
    const t = h("div", { class: "toast toast-" + (kind || "info"), role: "status" }, message);
    box.append(t);
    setTimeout(() => t.remove(), 5000);
  }
  function prettyJson(text) {
    if (text === null || text === undefined || text === "") return "";
    if (typeof text !== "string") return JSON.stringify(text, null, 2);
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
  }
  function debounce(fn, ms) {
    let t;
    return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, body) {
      let msg = "";
      try {
        const sm = JSON.parse(body._server_messages || "[]");
        msg = sm.map((m) => JSON.parse(m).message).join("\n");
      } catch (_) { /* fall back below */ }
      if (!msg && body.exception) msg = String(body.exception).replace(/^frappe\.exceptions\.\w+: /, "");
      super(msg || __("Request failed ({0})", status));
      this.status = status;
      this.excType = body.exc_type || "";
    }
  }

  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      // Every state-changing request of a desk session carries its CSRF token.
      headers["X-Frappe-CSRF-Token"] = boot.csrf_token;
    }
    let r;
    try {
      r = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, { exception: __("The site did not answer: {0}", e.message) });
    }
    const text = await r.text();
    let json = {};
    try { json = text ? JSON.parse(text) : {}; } catch (_) { json = { exception: text.slice(0, 200) }; }
    if (!r.ok) {
      const err = new ApiError(r.status, json);
      if (r.status === 403 && /log in/.test(err.message)) {
        location.href = "/login?redirect-to=" + encodeURIComponent(location.pathname + location.search);
      }
      throw err;
    }
    return json;
  }
  const qs = (args) => Object.entries(args)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(typeof v === "string" ? v : JSON.stringify(v)))
    .join("&");
  const api = {
    get: (path, args) => request("GET", path + (args ? "?" + qs(args) : "")),
    call: async (method, args) => (await request("POST", "/api/method/" + method, args || {})).message,
    callGet: async (method, args) => (await request("GET", "/api/method/" + method + "?" + qs(args || {}))).message,
    resource: (dt, name) => "/api/resource/" + encodeURIComponent(dt) + (name === undefined ? "" : "/" + encodeURIComponent(name)),
  };

  const metaCache = new Map();
  /** The type (by name or slug) with its child types and the caller's permissions. */
  async function getMeta(doctype) {
    if (metaCache.has(doctype)) return metaCache.get(doctype);
    // Frappe answers getdoctype at the top level (docs, perms), not under message.
    const m = await request("GET", "/api/method/frappe.desk.form.load.getdoctype?" + qs({ doctype }));
    const meta = { dt: m.docs[0], children: {}, perms: m.perms };
    for (const d of m.docs.slice(1)) meta.children[d.name] = d;
    metaCache.set(doctype, meta);
    metaCache.set(meta.dt.name, meta);
    return meta;
  }
  const label = (f) => __(f.label || f.fieldname);

  // ---------- shell ----------

  const app = document.getElementById("app");
  let main;
  let sidebarEl;
  let cleanup = [];

  function shell() {
    const initial = (boot.full_name || boot.user || "?").trim().charAt(0).toUpperCase();
    const menu = h("div", { class: "menu", hidden: true },
      h("a", { href: docUrl("User", boot.user), class: "menu-item" }, __("My Settings")),
      h("button", { class: "menu-item", dataset: { action: "logout" }, onclick: logout }, __("Log out")));
    const jump = h("input", { class: "jump", type: "search", placeholder: __("Search document types..."), "aria-label": __("Search document types..."), list: "doctype-list" });
    const options = h("datalist", { id: "doctype-list" },
      boot.sidebar.flatMap((g) => g.items.map((i) => h("option", { value: __(i.name) }))));
    jump.addEventListener("change", () => {
      for (const g of boot.sidebar) for (const i of g.items) {
        if (__(i.name).toLowerCase() === jump.value.trim().toLowerCase()) { jump.value = ""; go(listUrl(i.name)); }
      }
    });
    sidebarEl = h("nav", { class: "sidebar", "aria-label": __("Document types") });
    main = h("main", { class: "main", id: "main" });
    setChildren(app, 
      h("header", { class: "topbar" },
        h("a", { href: "/app", class: "brand" }, h("img", { src: "/assets/desk/icon.svg", alt: "", width: 26, height: 26 }), "docstream"),
        h("div", { class: "topbar-search" }, jump, options),
        h("span", { class: "site-url", title: __("This site") }, boot.site_url),
        h("div", { class: "user-menu" },
          h("button", { class: "avatar", title: boot.full_name, "aria-label": __("User menu"), dataset: { action: "user-menu" }, onclick: (e) => { e.stopPropagation(); menu.hidden = !menu.hidden; } }, initial),
          menu)),
      h("div", { class: "layout" }, sidebarEl, main));
    document.addEventListener("click", () => { menu.hidden = true; });
    renderSidebar();
  }

  function renderSidebar() {
    const path = location.pathname;
    const item = (href, text, extra) => h("a", { href, class: "side-item" + ((path === href || (href !== "/app" && path.startsWith(href + "/"))) ? " active" : "") }, extra, text);
    setChildren(sidebarEl, 
      h("div", { class: "side-group" },
        item("/app", __("Home"), h("span", { class: "side-icon" }, "⌂")),
        boot.is_system_manager ? item("/app/" + DASHBOARD, __("Streaming Dashboard"), h("span", { class: "side-icon" }, "⇄")) : null),
      ...boot.sidebar.map((g) => h("div", { class: "side-group" },
        h("div", { class: "side-label" }, __(g.label)),
        g.items.map((i) => item("/app/" + i.slug, __(i.name))))));
  }

  async function logout() {
    try { await api.call("logout"); } catch (_) { /* leaving anyway */ }
    location.href = "/login";
  }

  function go(url, replace) {
    if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
    render();
  }
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[href]");
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || a.target) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !(url.pathname === "/app" || url.pathname.startsWith("/app/"))) return;
    e.preventDefault();
    go(url.pathname + url.search);
  });
  window.addEventListener("popstate", render);

  function pageHead(title, opts, ...actions) {
    opts = opts || {};
    return h("div", { class: "page-head" },
      h("div", { class: "page-title" },
        opts.crumb ? h("a", { class: "crumb", href: opts.crumb[0] }, opts.crumb[1], " /") : null,
        h("h1", null, title),
        opts.badge || null),
      h("div", { class: "page-actions" }, actions));
  }
  function button(text, action, onclick, kind) {
    return h("button", { class: "btn " + (kind || "btn-default"), type: "button", dataset: { action }, onclick }, text);
  }
  function errorBox(err) {
    return h("div", { class: "alert alert-error", role: "alert" }, err.message || String(err));
  }

  async function render() {
    cleanup.forEach((f) => f());
    cleanup = [];
    renderSidebar();
    const parts = location.pathname.replace(/^\/app\/?/, "").split("/").filter(Boolean);
    setChildren(main, h("div", { class: "loading" }, __("Loading...")));
    window.scrollTo(0, 0);
    try {
      if (parts.length === 0) return await homeView();
      if (parts[0] === DASHBOARD) return await dashboardView();
      const meta = await getMeta(decodeURIComponent(parts[0]));
      if (parts.length === 1) {
        if (meta.dt.issingle) return go(docUrl(meta.dt.name, meta.dt.name), true);
        return await listView(meta);
      }
      const name = decodeURIComponent(parts.slice(1).join("/"));
      return await formView(meta, parts.length === 2 && parts[1] === "new" ? null : name);
    } catch (e) {
      setChildren(main, pageHead(__("Something went wrong")), errorBox(e));
    }
  }

  // ---------- home ----------

  async function homeView() {
    document.title = __("Home") + " · docstream";
    setChildren(main, 
      pageHead(__("Welcome, {0}", boot.full_name || boot.user)),
      boot.is_system_manager ? h("a", { class: "card card-link banner", href: "/app/" + DASHBOARD },
        h("div", null, h("h3", null, __("Streaming Dashboard")), h("p", { class: "muted" }, __("Producers, consumers, lag and failed syncs at a glance."))),
        h("span", { class: "arrow" }, "→")) : null,
      h("div", { class: "grid-cards" }, boot.sidebar.map((g) => h("section", { class: "card" },
        h("h3", null, __(g.label)),
        h("ul", { class: "link-list" }, g.items.map((i) => h("li", null, h("a", { href: "/app/" + i.slug }, __(i.name)))))))));
  }

  // ---------- list ----------

  function listColumns(dt) {
    const cols = dt.fields.filter((f) => f.in_list_view && !NO_VALUE.includes(f.fieldtype) && f.fieldtype !== "Password" && !f.hidden);
    return cols.slice(0, 6);
  }

  function formatValue(f, v) {
    if (v === null || v === undefined || v === "") return h("span", { class: "muted" }, "");
    switch (f.fieldtype) {
      case "Check": return v ? h("span", { class: "check-yes", title: __("Yes") }, "✓") : h("span", { class: "muted" }, "–");
      case "Currency": return h("span", { class: "num" }, MONEY.format(Number(v)));
      case "Float": case "Percent": return h("span", { class: "num" }, NUM.format(Number(v)) + (f.fieldtype === "Percent" ? "%" : ""));
      case "Int": return h("span", { class: "num" }, f.fieldname === "seq" ? String(v) : NUM.format(Number(v)));
      case "Select": return /status|priority|update_type/.test(f.fieldname) ? pill(String(v)) : __(String(v));
      case "Datetime": return timeEl(v);
      case "Password": return "•••••";
      default: return String(v).length > 80 ? String(v).slice(0, 80) + "…" : String(v);
    }
  }

  const OPS = ["=", "!=", "like", "not like", ">", "<", ">=", "<=", "is"];

  async function listView(meta) {
    const dt = meta.dt;
    document.title = __(dt.name) + " · docstream";
    const params = new URLSearchParams(location.search);
    const state = {
      filters: [],
      orderBy: dt.sort_field && dt.sort_field !== "modified" ? dt.sort_field : "modified",
      order: "desc",
      start: 0,
      pageLength: 20,
      search: "",
    };
    for (const [k, v] of params) {
      if (k === "order_by") { const [f, d] = v.split(" "); state.orderBy = f; state.order = d || "desc"; }
      else if (k === "page") state.start = Math.max(0, (parseInt(v, 10) - 1) || 0);
      else if (dt.fields.some((f) => f.fieldname === k) || ["name", "owner", "docstatus"].includes(k)) state.filters.push([k, "=", v]);
    }
    const titleField = dt.title_field && dt.title_field !== "name" && dt.fields.some((f) => f.fieldname === dt.title_field) ? dt.title_field : null;
    const cols = listColumns(dt).filter((f) => f.fieldname !== titleField);
    const fields = ["name", "modified", "docstatus", ...(titleField ? [titleField] : []), ...cols.map((f) => f.fieldname)];
    const sortable = [{ fieldname: "modified", label: "Last Updated" }, { fieldname: "creation", label: "Created On" }, { fieldname: "name", label: "ID" },
      ...dt.fields.filter((f) => !NO_VALUE.includes(f.fieldtype) && f.fieldtype !== "Password")];
    const filterable = [{ fieldname: "name", label: "ID", fieldtype: "Data" }, ...dt.fields.filter((f) => !NO_VALUE.includes(f.fieldtype) && f.fieldtype !== "Password")];

    const countEl = h("span", { class: "count-badge" });
    const tableBody = h("tbody");
    const pager = h("div", { class: "pager" });
    const chips = h("div", { class: "chips" });
    const errorEl = h("div");
    const search = h("input", { type: "search", class: "input search", placeholder: __("Search by ID..."), "aria-label": __("Search by ID..."), dataset: { role: "list-search" } });
    search.addEventListener("input", debounce(() => { state.search = search.value.trim(); state.start = 0; load(); }, 250));

    const fSel = h("select", { class: "input", "aria-label": __("Field") }, filterable.map((f) => h("option", { value: f.fieldname }, label(f))));
    const opSel = h("select", { class: "input", "aria-label": __("Condition") }, OPS.map((o) => h("option", { value: o }, __(o))));
    const valIn = h("input", { class: "input", placeholder: __("Value"), "aria-label": __("Value") });
    const filterForm = h("form", { class: "filter-form", hidden: true, onsubmit: (e) => {
      e.preventDefault();
      let v = valIn.value;
      const op = opSel.value;
      if ((op === "like" || op === "not like") && !v.includes("%")) v = "%" + v + "%";
      if (op === "is") v = v === "not set" ? "not set" : "set";
      state.filters.push([fSel.value, op, v]);
      state.start = 0; valIn.value = ""; filterForm.hidden = true; load();
    } }, fSel, opSel, valIn, h("button", { class: "btn btn-primary btn-sm", type: "submit", dataset: { action: "apply-filter" } }, __("Apply")));

    const sortSel = h("select", { class: "input", "aria-label": __("Sort by") }, sortable.map((f) => h("option", { value: f.fieldname, selected: f.fieldname === state.orderBy }, label(f))));
    sortSel.addEventListener("change", () => { state.orderBy = sortSel.value; state.start = 0; load(); });
    const dirBtn = h("button", { class: "btn btn-default btn-sm", type: "button", title: __("Toggle sort order"), dataset: { action: "sort-order" } });
    const setDir = () => { dirBtn.textContent = state.order === "desc" ? "↓" : "↑"; };
    dirBtn.addEventListener("click", () => { state.order = state.order === "desc" ? "asc" : "desc"; setDir(); state.start = 0; load(); });
    setDir();

    const head = h("tr", null,
      h("th", null, titleField ? label(dt.fields.find((f) => f.fieldname === titleField)) : __("ID")),
      cols.map((f) => h("th", { class: ["Int", "Float", "Currency", "Percent"].includes(f.fieldtype) ? "num" : "" }, label(f))),
      dt.is_submittable ? h("th", null, __("Status")) : null,
      h("th", { class: "right" }, __("Last Updated")));

    setChildren(main, 
      pageHead(__(dt.name), { badge: countEl },
        button(__("Refresh"), "refresh", () => load()),
        meta.perms.create && !SERVER_WRITTEN.includes(dt.name) ? button("+ " + __("Add {0}", __(dt.name)), "new", () => go(listUrl(dt.name).replace(/\/?$/, "/new")), "btn-primary") : null),
      h("div", { class: "card list-card" },
        h("div", { class: "list-toolbar" },
          search,
          button(__("Filter"), "add-filter", () => { filterForm.hidden = !filterForm.hidden; if (!filterForm.hidden) valIn.focus(); }),
          h("div", { class: "sort" }, h("span", { class: "muted" }, __("Sort by")), sortSel, dirBtn)),
        filterForm, chips, errorEl,
        h("div", { class: "table-wrap" }, h("table", { class: "list-table" }, h("thead", null, head), tableBody)),
        pager));

    let seq = 0;
    async function load() {
      const mine = ++seq;
      const filters = state.filters.slice();
      if (state.search) filters.push(["name", "like", "%" + state.search + "%"]);
      setChildren(chips, ...state.filters.map((f, i) => {
        const fl = filterable.find((x) => x.fieldname === f[0]);
        return h("span", { class: "chip" }, (fl ? label(fl) : f[0]) + " " + __(f[1]) + " " + f[2],
          h("button", { class: "chip-x", type: "button", title: __("Remove filter"), "aria-label": __("Remove filter"), onclick: () => { state.filters.splice(i, 1); state.start = 0; load(); } }, "×"));
      }));
      // Keep plain equality filters in the URL, so a list can be linked to and reloaded.
      const q = new URLSearchParams();
      for (const f of state.filters) if (f[1] === "=") q.append(f[0], f[2]);
      if (state.start) q.set("page", String(state.start / state.pageLength + 1));
      history.replaceState(null, "", listUrl(dt.name, q.toString()));
      tableBody.classList.add("stale");
      try {
        // Server-side paging: one page of rows and a count, never the whole table.
        const [rows, count] = await Promise.all([
          api.get(api.resource(dt.name), { fields: fields, filters, order_by: state.orderBy + " " + state.order, limit_start: state.start, limit_page_length: state.pageLength }),
          api.callGet("frappe.client.get_count", { doctype: dt.name, filters }),
        ]);
        if (mine !== seq) return;
        setChildren(errorEl);
        countEl.textContent = __("{0} records", NUM.format(count));
        tableBody.classList.remove("stale");
        setChildren(tableBody, ...(rows.data.length ? rows.data.map((r) => {
          const href = docUrl(dt.name, r.name);
          return h("tr", { class: "clickable", dataset: { name: r.name }, onclick: (e) => { if (!e.target.closest("a")) go(href); } },
            h("td", { class: "title-cell" }, h("a", { href }, titleField && r[titleField] ? String(r[titleField]) : String(r.name)),
              titleField && r[titleField] && r[titleField] !== r.name ? h("span", { class: "muted small" }, " " + r.name) : null),
            cols.map((f) => h("td", { class: ["Int", "Float", "Currency", "Percent"].includes(f.fieldtype) ? "num" : "" }, formatValue(f, r[f.fieldname]))),
            dt.is_submittable ? h("td", null, pill(["Draft", "Submitted", "Cancelled"][r.docstatus] || "Draft")) : null,
            h("td", { class: "right muted" }, timeEl(r.modified)));
        }) : [h("tr", null, h("td", { colspan: cols.length + 3, class: "empty" }, __("No {0} found", __(dt.name))))]));
        const end = Math.min(state.start + rows.data.length, count);
        setChildren(pager, 
          h("div", { class: "page-size" }, [20, 100, 500].map((n) => h("button", { type: "button", class: "btn btn-sm " + (n === state.pageLength ? "btn-active" : "btn-default"), onclick: () => { state.pageLength = n; state.start = 0; load(); } }, String(n)))),
          h("span", { class: "muted", dataset: { role: "range" } }, count ? __("{0}–{1} of {2}", NUM.format(state.start + 1), NUM.format(end), NUM.format(count)) : ""),
          h("div", { class: "page-nav" },
            h("button", { type: "button", class: "btn btn-default btn-sm", disabled: state.start === 0, dataset: { action: "prev-page" }, onclick: () => { state.start = Math.max(0, state.start - state.pageLength); load(); } }, "‹ " + __("Previous")),
            h("button", { type: "button", class: "btn btn-default btn-sm", disabled: end >= count, dataset: { action: "next-page" }, onclick: () => { state.start += state.pageLength; load(); } }, __("Next") + " ›")));
      } catch (e) {
        if (mine !== seq) return;
        tableBody.classList.remove("stale");
        setChildren(errorEl, errorBox(e));
      }
    }
    await load();
  }

  // ---------- form controls ----------

  function toInputDatetime(v) { return v ? String(v).replace(" ", "T").slice(0, 19) : ""; }
  function fromInputDatetime(v) { return v ? v.replace("T", " ") + (v.length === 16 ? ":00" : "") : null; }

  /** A field's editor: {el, get(), set(v), error(msg), focus()}. `ctx.valueOf(f)` reads siblings. */
  function control(f, value, opts) {
    const ro = opts.readOnly;
    const id = "f-" + (opts.prefix || "") + f.fieldname;
    let input;
    let get;
    let set;
    const onChange = () => opts.onChange && opts.onChange(f);
    const wrap = h("div", { class: "field field-" + f.fieldtype.toLowerCase().replace(/ /g, "-") + (f.reqd ? " reqd" : ""), dataset: { fieldname: f.fieldname, fieldtype: f.fieldtype } });
    const lab = h("label", { class: "field-label", for: id }, label(f));
    const err = h("div", { class: "field-error", role: "alert", hidden: true });
    const desc = f.description && !opts.compact ? h("div", { class: "field-desc" }, __(f.description)) : null;
    if (ro) {
      const box = h("div", { class: "static-value", id });
      let current = value;
      set = (v) => {
        current = v;
        setChildren(box);
        if (v === null || v === undefined || v === "") { box.append(h("span", { class: "muted" }, "—")); return; }
        if (f.fieldtype === "Link" && f.options) box.append(h("a", { href: docUrl(f.options, v) }, String(v)));
        else if (f.fieldtype === "Dynamic Link" && opts.valueOf(f.options)) box.append(h("a", { href: docUrl(opts.valueOf(f.options), v) }, String(v)));
        else if (["Code", "JSON", "Long Text", "Small Text", "Text", "Text Editor"].includes(f.fieldtype)) box.append(h("pre", { class: f.fieldtype === "Code" || f.fieldtype === "JSON" ? "code" : "text" }, f.fieldtype === "Code" || f.fieldtype === "JSON" ? prettyJson(v) : String(v)));
        else if (f.fieldtype === "Password") box.append("•••••");
        else if (f.fieldtype === "Datetime") box.append(h("span", { title: ago(v) }, String(v).slice(0, 19)));
        else box.append(formatValue(f, v));
      };
      get = () => current;
      set(value);
      const checkLabel = opts.compact ? null : [" ", label(f)];
      append(wrap, [f.fieldtype === "Check" || opts.compact ? null : lab, f.fieldtype === "Check" ? h("div", { class: "check-ro" }, formatValue(f, value), checkLabel) : box, desc]);
      return { el: wrap, field: f, get, set, error() {}, focus() {} };
    }
    switch (f.fieldtype) {
      case "Check":
        input = h("input", { type: "checkbox", id, checked: !!Number(value) });
        input.addEventListener("change", onChange);
        get = () => (input.checked ? 1 : 0);
        set = (v) => { input.checked = !!Number(v); };
        append(wrap, [h("label", { class: "check-label", for: id, title: label(f) }, input, opts.compact ? null : h("span", null, label(f))), desc, err]);
        return mk();
      case "Select": {
        const options = (f.options || "").split("\n");
        if (!f.reqd && options[0] !== "") options.unshift("");
        input = h("select", { id, class: "input" }, options.map((o) => h("option", { value: o }, o ? __(o) : "")));
        get = () => input.value || null;
        set = (v) => {
          if (v && !options.includes(String(v))) input.append(h("option", { value: v }, v));
          input.value = v === null || v === undefined ? "" : String(v);
        };
        break;
      }
      case "Small Text": case "Text": case "Long Text": case "Text Editor": case "Code": case "JSON":
        input = h("textarea", { id, class: "input" + (f.fieldtype === "Code" || f.fieldtype === "JSON" ? " code" : ""), rows: f.fieldtype === "Small Text" ? 3 : (f.fieldtype === "Long Text" || f.fieldtype === "Text Editor" ? 8 : 5), spellcheck: f.fieldtype === "Code" || f.fieldtype === "JSON" ? "false" : null });
        get = () => input.value === "" ? null : input.value;
        set = (v) => { input.value = v === null || v === undefined ? "" : (f.fieldtype === "JSON" && typeof v !== "string" ? JSON.stringify(v, null, 2) : String(v)); };
        break;
      case "Int": case "Float": case "Currency": case "Percent":
        input = h("input", { id, class: "input num", inputmode: f.fieldtype === "Int" ? "numeric" : "decimal", autocomplete: "off" });
        get = () => {
          const s = input.value.trim();
          if (s === "") return null;
          const n = Number(s.replace(",", "."));
          // Sent as typed when it is not a number: the server names the field in its error.
          return isNaN(n) ? s : n;
        };
        set = (v) => { input.value = v === null || v === undefined ? "" : String(v); };
        break;
      case "Date":
        input = h("input", { id, class: "input", type: "date" });
        get = () => input.value || null;
        set = (v) => { input.value = v ? String(v).slice(0, 10) : ""; };
        break;
      case "Datetime":
        input = h("input", { id, class: "input", type: "datetime-local", step: "1" });
        get = () => fromInputDatetime(input.value);
        set = (v) => { input.value = toInputDatetime(v); };
        break;
      case "Time":
        input = h("input", { id, class: "input", type: "time", step: "1" });
        get = () => input.value ? (input.value.length === 5 ? input.value + ":00" : input.value) : null;
        set = (v) => { input.value = v ? String(v).slice(0, 8) : ""; };
        break;
      case "Password":
        input = h("input", { id, class: "input", type: "password", autocomplete: "new-password" });
        get = () => input.value === "" ? null : input.value;
        set = (v) => { input.value = v === null || v === undefined ? "" : String(v); };
        break;
      case "Link": case "Dynamic Link":
        return linkControl(f, value, opts, wrap, lab, err, desc, id);
      default: // Data, Attach, Read Only and anything new: a text box
        input = h("input", { id, class: "input", autocomplete: "off", type: f.options === "Email" ? "email" : "text" });
        get = () => input.value === "" ? null : input.value;
        set = (v) => { input.value = v === null || v === undefined ? "" : String(v); };
    }
    input.addEventListener("input", onChange);
    input.addEventListener("change", onChange);
    set(value);
    append(wrap, [opts.compact ? null : lab, input, (f.fieldtype === "Attach" || f.fieldtype === "Attach Image") && value ? h("a", { href: value, target: "_blank", rel: "noopener", class: "small" }, __("Open attachment")) : null, desc, err]);
    return mk();

    function mk() {
      return {
        el: wrap, field: f, get, set, input,
        error(msg) {
          err.hidden = !msg; err.textContent = msg || "";
          wrap.classList.toggle("has-error", !!msg);
        },
        focus() { input && input.focus(); },
      };
    }
  }

  /** Link and Dynamic Link: a text box with search-as-you-type and a link to the target. */
  function linkControl(f, value, opts, wrap, lab, err, desc, id) {
    const input = h("input", { id, class: "input", autocomplete: "off", role: "combobox", "aria-autocomplete": "list", "aria-expanded": "false" });
    const list = h("ul", { class: "awesomplete", role: "listbox", hidden: true });
    const open = h("a", { class: "link-open", title: __("Open"), "aria-label": __("Open"), hidden: true }, "→");
    const target = () => (f.fieldtype === "Link" ? f.options : opts.valueOf(f.options));
    let items = [];
    let active = -1;
    let seq = 0;
    const refreshOpen = () => {
      const t = target();
      open.hidden = !(input.value && t);
      if (!open.hidden) open.href = docUrl(t, input.value);
    };
    const close = () => { list.hidden = true; input.setAttribute("aria-expanded", "false"); active = -1; };
    const choose = (v) => { input.value = v; close(); refreshOpen(); opts.onChange && opts.onChange(f); };
    const search = debounce(async () => {
      const t = target();
      if (!t) { items = []; setChildren(list, h("li", { class: "muted" }, __("Set {0} first", f.options))); list.hidden = false; return; }
      const mine = ++seq;
      try {
        const res = await api.callGet("frappe.desk.search.search_link", { doctype: t, txt: input.value, page_length: 10 });
        if (mine !== seq || document.activeElement !== input) return;
        items = res;
        active = -1;
        setChildren(list, ...(res.length ? res.map((r, i) => h("li", { role: "option", dataset: { value: r.value }, onmousedown: (e) => { e.preventDefault(); choose(String(r.value)); }, onmouseenter: () => { active = i; mark(); } },
          h("strong", null, String(r.value)), r.description ? h("span", { class: "muted small" }, String(r.description)) : null))
          : [h("li", { class: "muted" }, __("No results"))]));
        list.hidden = false;
        input.setAttribute("aria-expanded", "true");
      } catch (e) {
        setChildren(list, h("li", { class: "text-error" }, e.message));
        list.hidden = false;
      }
    }, 120);
    const mark = () => [...list.children].forEach((li, i) => li.classList.toggle("active", i === active));
    input.addEventListener("input", () => { refreshOpen(); search(); opts.onChange && opts.onChange(f); });
    input.addEventListener("focus", () => {
      // One suggestion list at a time, even when focus moves faster than the blur timer.
      document.querySelectorAll(".awesomplete").forEach((l) => { if (l !== list) l.hidden = true; });
      search();
    });
    input.addEventListener("blur", () => setTimeout(close, 100));
    input.addEventListener("keydown", (e) => {
      if (list.hidden || !items.length) return;
      if (e.key === "ArrowDown") { active = Math.min(items.length - 1, active + 1); mark(); e.preventDefault(); }
      else if (e.key === "ArrowUp") { active = Math.max(0, active - 1); mark(); e.preventDefault(); }
      else if (e.key === "Enter" && active >= 0) { choose(String(items[active].value)); e.preventDefault(); }
      else if (e.key === "Escape") close();
    });
    input.value = value === null || value === undefined ? "" : String(value);
    refreshOpen();
    append(wrap, [opts.compact ? null : lab, h("div", { class: "link-wrap" }, input, open, list), desc, err]);
    return {
      el: wrap, field: f, input,
      get: () => input.value === "" ? null : input.value,
      set: (v) => { input.value = v === null || v === undefined ? "" : String(v); refreshOpen(); },
      error(msg) { err.hidden = !msg; err.textContent = msg || ""; wrap.classList.toggle("has-error", !!msg); },
      focus() { input.focus(); },
    };
  }

  /** A child table: rows with inline editors, add and delete rows, and a per-row detail panel. */
  function tableControl(f, rows, child, opts) {
    const wrap = h("div", { class: "field field-table", dataset: { fieldname: f.fieldname, fieldtype: f.fieldtype } });
    const err = h("div", { class: "field-error", role: "alert", hidden: true });
    const dataFields = child.fields.filter((x) => !NO_VALUE.includes(x.fieldtype) && !x.hidden);
    let cols = dataFields.filter((x) => x.in_list_view);
    if (!cols.length) cols = dataFields.slice(0, 4);
    cols = cols.slice(0, 5);
    const extra = opts.rowActions || null;
    let state = (rows || []).map((r) => ({ doc: Object.assign({}, r), controls: {}, open: false, selected: false }));
    const body = h("tbody");
    const delBtn = button(__("Delete"), "delete-rows", () => { state = state.filter((r) => !r.selected); changed(); draw(); if (opts.onRowChange) opts.onRowChange(f, null, null); }, "btn-danger btn-sm");
    const addBtn = button("+ " + __("Add Row"), "add-row", () => {
      const doc = {};
      for (const x of dataFields) if (x.default !== null && x.default !== undefined && x.default !== "") doc[x.fieldname] = defaultValue(x);
      state.push({ doc, controls: {}, open: false, selected: false, isNew: true });
      changed(); draw();
      const last = state[state.length - 1];
      const first = cols.map((c) => last.controls[c.fieldname]).find((c) => c && c.input);
      if (first) first.focus();
    }, "btn-default btn-sm");
    const changed = () => opts.onChange && opts.onChange(f);
    function collect() {
      for (const r of state) for (const [k, c] of Object.entries(r.controls)) r.doc[k] = c.get();
    }
    function draw() {
      collect();
      setChildren(body);
      state.forEach((r, i) => {
        r.controls = {};
        const rowOpts = { readOnly: opts.readOnly, compact: true, prefix: f.fieldname + "-" + i + "-", valueOf: (fn) => (r.controls[fn] ? r.controls[fn].get() : r.doc[fn]),
          onChange: (cf) => { changed(); if (opts.onRowChange && cf) opts.onRowChange(f, r, cf); } };
        const cells = cols.map((c) => {
          const ctl = control(c, r.doc[c.fieldname], Object.assign({}, rowOpts, { readOnly: opts.readOnly || c.read_only }));
          r.controls[c.fieldname] = ctl;
          return h("td", null, ctl.el);
        });
        const sel = h("input", { type: "checkbox", "aria-label": __("Select row {0}", i + 1), checked: r.selected, onchange: (e) => { r.selected = e.target.checked; delBtn.hidden = !state.some((x) => x.selected); } });
        const hasMore = dataFields.length > cols.length;
        body.append(h("tr", { class: "grid-row", dataset: { idx: i + 1 } },
          opts.readOnly ? null : h("td", { class: "grid-check" }, sel),
          h("td", { class: "grid-idx muted" }, String(i + 1)),
          cells,
          extra ? h("td", { class: "grid-actions" }, extra(r.doc, i)) : null,
          h("td", { class: "grid-edit" }, hasMore ? h("button", { type: "button", class: "btn-icon", title: __("Edit row"), "aria-label": __("Edit row"), dataset: { action: "edit-row" }, onclick: () => { collect(); r.open = !r.open; draw(); } }, r.open ? "▴" : "▾") : null)));
        if (r.open) {
          const panel = h("div", { class: "row-panel" });
          for (const x of dataFields) {
            if (cols.includes(x)) continue;
            const ctl = control(x, r.doc[x.fieldname], Object.assign({}, rowOpts, { compact: false, readOnly: opts.readOnly || x.read_only }));
            r.controls[x.fieldname] = ctl;
            panel.append(ctl.el);
          }
          body.append(h("tr", { class: "grid-panel" }, h("td", { colspan: cols.length + 4 }, panel)));
        }
      });
      if (!state.length) body.append(h("tr", null, h("td", { colspan: cols.length + 4, class: "empty" }, __("No rows"))));
      delBtn.hidden = !state.some((x) => x.selected);
    }
    draw();
    append(wrap, [
      h("div", { class: "field-label" }, label(f)),
      h("div", { class: "grid" },
        h("table", { class: "grid-table" },
          h("thead", null, h("tr", null, opts.readOnly ? null : h("th", { class: "grid-check" }), h("th", { class: "grid-idx" }, __("No.")), cols.map((c) => h("th", { class: c.reqd ? "reqd" : "" }, label(c))), extra ? h("th", null) : null, h("th", { class: "grid-edit" }))),
          body),
        opts.readOnly ? null : h("div", { class: "grid-foot" }, addBtn, delBtn)),
      f.description ? h("div", { class: "field-desc" }, __(f.description)) : null,
      err]);
    return {
      el: wrap, field: f, isTable: true,
      get() { collect(); return state.map((r) => r.doc); },
      set(v) { state = (v || []).map((r) => ({ doc: Object.assign({}, r), controls: {}, open: false, selected: false })); draw(); },
      /** Each row as {doc, controls}, for form scripts. */
      rows() { collect(); return state; },
      error(msg) { err.hidden = !msg; err.textContent = msg || ""; wrap.classList.toggle("has-error", !!msg); },
      focus() {},
    };
  }

  // ---------- form behaviour ----------

  /** Field types a form may compute and show before the first save. */
  const COMPUTED = ["Currency", "Float", "Int", "Percent"];

  /** A field's default as a new document gets it: `Today`, `Now` and `__user` resolved. */
  function defaultValue(f) {
    const d = String(f.default);
    const now = new Date(Date.now() - CLOCK_SKEW);
    const pad = (n) => String(n).padStart(2, "0");
    const day = now.getFullYear() + "-" + pad(now.getMonth() + 1) + "-" + pad(now.getDate());
    switch (d.toLowerCase()) {
      case "today": return day;
      case "now": return day + " " + pad(now.getHours()) + ":" + pad(now.getMinutes()) + ":" + pad(now.getSeconds());
      case "__user": return boot.user;
      default: return f.fieldtype === "Check" ? Number(d) : d;
    }
  }

  const rowValue = (row, fn) => (row.controls[fn] ? row.controls[fn].get() : row.doc[fn]);
  function setRowValue(row, fn, v) {
    row.doc[fn] = v;
    if (row.controls[fn]) row.controls[fn].set(v);
  }
  const num = (v) => { const n = Number(v); return isNaN(n) ? 0 : n; };
  const money = (x) => Math.round(x * 100) / 100;

  /** `depends_on`: a fieldname (true when set) or `eval:` with `doc.field`, `!doc.field` and
   * comparisons with a quoted string or a number, joined by `&&` or `||`. (The page may not
   * evaluate code: the Content-Security-Policy forbids it.) An expression outside that shows
   * the field. */
  function dependsOn(expr, get) {
    const truthy = (v) => v !== null && v !== undefined && v !== "" && v !== 0 && v !== "0";
    const e = String(expr).trim();
    if (!e.startsWith("eval:")) return truthy(get(e));
    const term = (t) => {
      t = t.trim();
      let m = t.match(/^(!)?\s*doc\.(\w+)$/);
      if (m) return m[1] ? !truthy(get(m[2])) : truthy(get(m[2]));
      m = t.match(/^doc\.(\w+)\s*(===|!==|==|!=|>=|<=|>|<)\s*(?:'([^']*)'|"([^"]*)"|(-?\d+(?:\.\d+)?))$/);
      if (!m) { console.warn("depends_on not understood, field shown:", expr); return true; }
      const v = get(m[1]);
      const lit = m[5] !== undefined ? Number(m[5]) : (m[3] !== undefined ? m[3] : m[4]);
      const a = typeof lit === "number" ? num(v) : (v === null || v === undefined ? "" : String(v));
      switch (m[2]) {
        case "==": case "===": return a === lit;
        case "!=": case "!==": return a !== lit;
        case ">": return a > lit;
        case "<": return a < lit;
        case ">=": return a >= lit;
        default: return a <= lit;
      }
    };
    return e.slice(5).split("||").some((any) => any.split("&&").every(term));
  }

  /** What forms of some types do as the user types (their server controllers stay the
   * authority: a save recomputes). */
  const FORM_SCRIPTS = {
    "Sales Invoice": {
      async rowChange(form, tf, row, cf) {
        if (tf.fieldname !== "items" || !row || !cf || cf.fieldname !== "item_code") return;
        const code = rowValue(row, "item_code");
        if (!code || num(rowValue(row, "rate"))) return;
        const item = await api.callGet("frappe.client.get_value", { doctype: "Item", fieldname: JSON.stringify(["standard_rate"]), filters: code });
        if (item && item.standard_rate) setRowValue(row, "rate", item.standard_rate);
      },
      change(form) {
        const items = form.controls.items;
        if (!items || !items.rows) return;
        let total = 0;
        for (const r of items.rows()) {
          const amount = money(num(rowValue(r, "qty")) * num(rowValue(r, "rate")));
          setRowValue(r, "amount", amount);
          total += amount;
        }
        form.setValue("total", money(total));
        form.setValue("grand_total", money(total));
      },
    },
  };

  // ---------- form ----------

  async function formView(meta, name) {
    const dt = meta.dt;
    const isNew = name === null;
    let doc;
    if (isNew) {
      doc = { docstatus: 0 };
      for (const f of dt.fields) {
        if (f.default !== null && f.default !== undefined && f.default !== "" && !NO_VALUE.includes(f.fieldtype)) doc[f.fieldname] = defaultValue(f);
      }
      const params = new URLSearchParams(location.search);
      for (const [k, v] of params) if (dt.fields.some((f) => f.fieldname === k)) doc[k] = v;
    } else {
      doc = (await api.get(api.resource(dt.name, name))).data;
    }
    document.title = (isNew ? __("New {0}", __(dt.name)) : String(doc.name)) + " · docstream";
    const form = new Form(meta, doc, isNew);
    form.draw();
  }

  class Form {
    constructor(meta, doc, isNew) {
      this.meta = meta;
      this.dt = meta.dt;
      this.doc = doc;
      this.isNew = isNew;
      this.dirty = new Set();
      this.controls = {};
      this.alert = h("div", { class: "form-alerts" });
      const keys = (e) => {
        if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); this.save(); }
      };
      document.addEventListener("keydown", keys);
      cleanup.push(() => document.removeEventListener("keydown", keys));
    }

    get readOnly() {
      return SERVER_WRITTEN.includes(this.dt.name) || !(this.isNew ? this.meta.perms.create : this.meta.perms.write);
    }

    fieldReadOnly(f) {
      if (this.readOnly || f.fieldtype === "Read Only") return true;
      if (f.read_only) return true;
      if (this.doc.docstatus === 1) return !f.allow_on_submit;
      return this.doc.docstatus === 2;
    }

    status() {
      if (this.isNew) return ["Not Saved", "orange"];
      if (this.dirty.size) return ["Not Saved", "orange"];
      if (this.dt.is_submittable) return [["Draft", "Submitted", "Cancelled"][this.doc.docstatus] || "Draft"];
      if (this.doc.status && typeof this.doc.status === "string") return [this.doc.status];
      return null;
    }

    valueOf(fieldname) {
      const c = this.controls[fieldname];
      return c ? c.get() : this.doc[fieldname];
    }

    onChange(f) {
      const wasClean = this.dirty.size === 0;
      this.dirty.add(f.fieldname);
      this.controls[f.fieldname] && this.controls[f.fieldname].error(null);
      // Redraw the head only when its state changes: replacing the buttons under a pending
      // click (a field's change event fires on blur, between mousedown and click) eats it.
      if (wasClean && !this.isNew) this.drawHead();
      if (f.fieldtype === "Link") this.fetchFrom(this.dt, f, (fn) => this.valueOf(fn), (fn, v) => this.setValue(fn, v)).then(() => this.afterChange(f));
      else this.afterChange(f);
    }

    /** A child row's field changed (`row` null: rows were removed). */
    onRowChange(tf, row, cf) {
      const child = this.meta.children[tf.options];
      const done = row && cf && cf.fieldtype === "Link" && child
        ? this.fetchFrom(child, cf, (fn) => rowValue(row, fn), (fn, v) => setRowValue(row, fn, v))
        : Promise.resolve();
      done.then(() => {
        const script = FORM_SCRIPTS[this.dt.name];
        if (script && script.rowChange) return script.rowChange(this, tf, row, cf);
      }).then(() => this.afterChange(tf)).catch((e) => toast(e.message, "error"));
    }

    afterChange(f) {
      const script = FORM_SCRIPTS[this.dt.name];
      if (script && script.change) script.change(this, f);
      this.applyDependsOn();
    }

    /** Sets a field's value on the form (and its control). */
    setValue(fieldname, v) {
      this.doc[fieldname] = v;
      if (this.controls[fieldname]) this.controls[fieldname].set(v);
    }

    /** Copies `fetch_from` values of `dt`'s fields that read `link` from the linked document,
     * as the server does on save (the server stays the authority). */
    async fetchFrom(dt, link, get, set) {
      const wanted = dt.fields.filter((x) => x.fetch_from && x.fetch_from.split(".")[0] === link.fieldname);
      const target = get(link.fieldname);
      if (!wanted.length || !target || !link.options) return;
      const sources = [...new Set(wanted.map((x) => x.fetch_from.split(".")[1]))];
      let got;
      try {
        got = await api.callGet("frappe.client.get_value", { doctype: link.options, fieldname: JSON.stringify(sources), filters: target });
      } catch (e) {
        return;
      }
      for (const x of wanted) {
        const v = got ? got[x.fetch_from.split(".")[1]] : undefined;
        if (v === undefined) continue;
        const current = get(x.fieldname);
        if (x.fetch_if_empty && current !== null && current !== undefined && current !== "") continue;
        set(x.fieldname, v);
      }
    }

    /** Shows fields whose `depends_on` holds, marks those whose `mandatory_depends_on` holds. */
    applyDependsOn() {
      for (const [fn, c] of Object.entries(this.controls)) {
        const f = c.field;
        if (!f) continue;
        if (f.depends_on) c.el.hidden = !dependsOn(f.depends_on, (x) => this.valueOf(x));
        if (f.mandatory_depends_on) c.el.classList.toggle("reqd", !!f.reqd || dependsOn(f.mandatory_depends_on, (x) => this.valueOf(x)));
      }
    }

    draw() {
      this.head = h("div");
      this.body = h("div", { class: "form-body" });
      this.controls = {};
      const layout = this.layout();
      this.drawHead();
      setChildren(main, this.head, this.alert, this.extras() || "", layout, this.footer());
      this.applyDependsOn();
    }

    /** Builds tabs > sections > columns > fields from the field order, as Frappe does. */
    layout() {
      const tabs = [];
      let tab = { label: null, sections: [] };
      let section = null;
      let column = null;
      const newSection = (lbl) => { section = { label: lbl, columns: [] }; tab.sections.push(section); column = []; section.columns.push(column); };
      newSection(null);
      tabs.push(tab);
      for (const f of this.dt.fields) {
        if (f.hidden) continue;
        if (f.fieldtype === "Tab Break") { tab = { label: f.label, sections: [] }; tabs.push(tab); newSection(null); continue; }
        if (f.fieldtype === "Section Break") { newSection(f.label); continue; }
        if (f.fieldtype === "Column Break") { column = []; section.columns.push(column); continue; }
        if (DISPLAY_ONLY.includes(f.fieldtype)) continue;
        // Read-only fields have nothing to show on a new form, unless the form fills them in.
        if (this.isNew && f.read_only && !f.default && f.fieldtype !== "Table" && !f.fetch_from && !COMPUTED.includes(f.fieldtype)) continue;
        // Shown above the form as "Received by".
        if (this.dt.name === "Event Update Log" && f.fieldname === "consumers") continue;
        column.push(f);
      }
      const opts = { valueOf: (fn) => this.valueOf(fn), onChange: (f) => this.onChange(f), onRowChange: (tf, row, cf) => this.onRowChange(tf, row, cf) };
      const drawSection = (s) => {
        const cols = s.columns.filter((c) => c.length);
        if (!cols.length) return null;
        return h("section", { class: "form-section card" },
          s.label ? h("h3", { class: "section-title" }, __(s.label)) : null,
          h("div", { class: "section-cols cols-" + cols.length }, cols.map((c) => h("div", { class: "section-col" }, c.map((f) => {
            const ro = this.fieldReadOnly(f);
            let ctl;
            if (f.fieldtype === "Table" || f.fieldtype === "Table MultiSelect") {
              const child = this.meta.children[f.options];
              ctl = tableControl(f, this.doc[f.fieldname], child, Object.assign({}, opts, { readOnly: ro, rowActions: this.rowActions(f) }));
            } else {
              ctl = control(f, this.doc[f.fieldname], Object.assign({}, opts, { readOnly: ro }));
            }
            this.controls[f.fieldname] = ctl;
            return ctl.el;
          })))));
      };
      const needsName = this.isNew && (this.dt.autoname || "").toLowerCase() === "prompt";
      const nameBox = needsName ? (() => {
        const f = { fieldname: "__newname", label: "Name", fieldtype: "Data", reqd: 1 };
        const c = control(f, this.doc.name, opts);
        this.controls.__newname = c;
        return h("section", { class: "form-section card" }, c.el);
      })() : null;
      const visible = tabs.filter((t) => t.sections.some((s) => s.columns.some((c) => c.length)));
      if (visible.length <= 1) return h("div", { class: "form-layout" }, nameBox, tabs.flatMap((t) => t.sections.map(drawSection)));
      const panes = visible.map((t) => h("div", { class: "tab-pane" }, t.sections.map(drawSection)));
      const tabBtns = visible.map((t, i) => h("button", { type: "button", class: "tab" + (i === 0 ? " active" : ""), onclick: () => {
        panes.forEach((p, j) => { p.hidden = j !== i; });
        tabBtns.forEach((b, j) => b.classList.toggle("active", j === i));
      } }, __(t.label || "Details")));
      panes.forEach((p, j) => { p.hidden = j !== 0; });
      return h("div", { class: "form-layout" }, nameBox, h("div", { class: "tabs" }, tabBtns), panes);
    }

    drawHead() {
      const dt = this.dt;
      const st = this.status();
      const acts = [];
      const p = this.meta.perms;
      for (const b of this.customButtons()) acts.push(b);
      if (!this.readOnly && this.doc.docstatus === 0 && (this.isNew || this.dirty.size || !dt.is_submittable)) acts.push(button(__("Save"), "save", () => this.save(), "btn-primary"));
      else if (!this.readOnly && this.doc.docstatus === 1 && this.dirty.size) acts.push(button(__("Update"), "save", () => this.save(), "btn-primary"));
      if (!this.isNew && !this.dirty.size && dt.is_submittable && this.doc.docstatus === 0 && p.submit) acts.push(button(__("Submit"), "submit", () => this.submit(), "btn-primary"));
      if (!this.isNew && dt.is_submittable && this.doc.docstatus === 1 && p.cancel) acts.push(button(__("Cancel"), "cancel", () => this.cancel(), "btn-danger"));
      if (!this.isNew && p.delete && this.doc.docstatus !== 1 && !dt.issingle) acts.push(button(__("Delete"), "delete", () => this.remove(), "btn-default btn-subtle"));
      const title = this.isNew ? __("New {0}", __(dt.name)) : String(this.titleText());
      const crumb = dt.issingle ? null : [listUrl(dt.name), __(dt.name)];
      setChildren(this.head, pageHead(title, { crumb, badge: st ? pill(st[0], st[1]) : null }, acts));
    }

    titleText() {
      const tf = this.dt.title_field;
      const t = tf && this.doc[tf];
      return t && t !== this.doc.name ? t + " · " + this.doc.name : this.doc.name;
    }

    footer() {
      if (this.isNew) return "";
      const d = this.doc;
      return h("div", { class: "form-footer muted small" },
        __("Created by {0}", d.owner || "—"), " · ", timeEl(d.creation), "  ·  ",
        __("Last updated by {0}", d.modified_by || "—"), " · ", timeEl(d.modified));
    }

    show(kind, message, extra) {
      setChildren(this.alert, h("div", { class: "alert alert-" + kind, role: kind === "error" ? "alert" : "status", dataset: { role: "form-" + kind } }, message, extra || null));
    }

    clearErrors() {
      for (const c of Object.values(this.controls)) c.error(null);
      setChildren(this.alert);
    }

    /** Puts the server's message next to the fields it names (by `(fieldname)` or label). */
    showError(e) {
      this.show("error", e.message);
      const msg = e.message || "";
      const ctls = Object.values(this.controls);
      let hit = ctls.filter((c) => c.isTable && msg.startsWith((c.field.label || c.field.fieldname) + " row "));
      if (!hit.length) hit = ctls.filter((c) => msg.includes("(" + c.field.fieldname + ")"));
      if (!hit.length) {
        const byLabel = ctls.filter((c) => c.field.label && new RegExp("(^|[^\\w])" + c.field.label.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "([^\\w]|$)").test(msg));
        byLabel.sort((a, b) => b.field.label.length - a.field.label.length);
        hit = byLabel.slice(0, 1);
      }
      for (const c of hit) c.error(msg);
      if (hit.length) { hit[0].el.scrollIntoView({ block: "center" }); hit[0].focus(); }
    }

    collect(all) {
      const out = {};
      for (const [k, c] of Object.entries(this.controls)) {
        if (k === "__newname") continue;
        if (this.fieldReadOnly(c.field)) continue;
        if (!all && !this.dirty.has(k)) continue;
        const v = c.get();
        if (all && (v === null || (Array.isArray(v) && !v.length))) continue;
        out[k] = v;
      }
      return out;
    }

    async save(extra) {
      if (this.busy) return;
      this.clearErrors();
      this.busy = true;
      const dt = this.dt;
      try {
        let saved;
        if (this.isNew) {
          const body = this.collect(true);
          if (this.controls.__newname) body.name = this.controls.__newname.get();
          saved = (await request("POST", api.resource(dt.name), Object.assign(body, extra || {}))).data;
        } else {
          // Only what changed, plus `modified`: a stale form gets TimestampMismatchError.
          const body = Object.assign(this.collect(false), extra || {}, { modified: this.doc.modified });
          saved = (await request("PUT", api.resource(dt.name, this.doc.name), body)).data;
        }
        const wasNew = this.isNew;
        this.doc = saved;
        this.isNew = false;
        this.dirty.clear();
        if (wasNew) history.replaceState(null, "", docUrl(dt.name, saved.name));
        document.title = String(saved.name) + " · docstream";
        this.draw();
        // A submit reports itself; a plain save says "Saved".
        if (!extra) this.afterSave(wasNew);
        return true;
      } catch (e) {
        this.showError(e);
        return false;
      } finally {
        this.busy = false;
      }
    }

    afterSave(wasNew) {
      if (this.dt.name === "Event Producer") {
        const rows = this.doc.producer_doctypes || [];
        const pending = rows.filter((r) => r.status !== "Approved").map((r) => r.ref_doctype);
        // A producer that connects has not been called: the handshake waits for its first
        // connection, and the form must not claim one.
        const connects = this.doc.connection === "Producer connects";
        this.show(connects && wasNew ? "info" : "success", !wasNew
          ? __("Saved")
          : connects
            ? __("Saved. Waiting for {0} to connect: the handshake runs over its first connection, then its rows wait for approval there.", this.doc.name)
            : __("Connected to {0}: the producer registered this site.", this.doc.name) + " " + (pending.length ? __("Waiting for approval on the producer: {0}.", pending.join(", ")) : ""));
      } else {
        toast(__("Saved"), "success");
      }
    }

    async submit() {
      if (!confirm(__("Permanently submit {0}?", this.doc.name))) return;
      if (await this.save({ docstatus: 1 })) toast(__("Submitted"), "success");
    }

    async cancel() {
      if (!confirm(__("Permanently cancel {0}?", this.doc.name))) return;
      try {
        this.doc = await api.call("frappe.client.cancel", { doctype: this.dt.name, name: this.doc.name });
        this.draw();
        toast(__("Cancelled"), "success");
      } catch (e) { this.showError(e); }
    }

    async remove() {
      if (!confirm(__("Delete {0}?", this.doc.name))) return;
      try {
        await request("DELETE", api.resource(this.dt.name, this.doc.name));
        toast(__("Deleted"), "success");
        go(listUrl(this.dt.name));
      } catch (e) { this.showError(e); }
    }

    // ----- type-specific parts -----

    customButtons() {
      const d = this.doc;
      const out = [];
      if (this.isNew) return out;
      if (this.dt.name === "User" && (boot.is_system_manager || d.name === boot.user)) out.push(button(__("Generate Keys"), "generate-keys", () => this.generateKeys()));
      if (this.dt.name === "Event Sync Log" && d.status === "Failed" && boot.is_system_manager) {
        if (d.conflict) {
          out.push(button(__("Keep this site's version"), "keep-local", () => this.resolve("local")));
          if (!/"kind":\s*"delete"/.test(d.conflict)) out.push(button(__("Keep both"), "keep-both", () => this.resolve("both")));
          out.push(button(__("Take the producer's version"), "take-producer", () => this.resolve("producer"), "btn-primary"));
        } else out.push(button(__("Resync"), "resync", () => this.resync(), "btn-primary"));
      }
      if (this.dt.name === "Event Producer") out.push(button(__("Pull Now"), "pull-now", () => this.pullNow()));
      if (this.dt.name === "Event Producer" && boot.is_system_manager) out.push(button(__("Verify"), "verify", () => this.verify()));
      if (this.dt.name === "Event Consumer" && boot.is_system_manager) out.push(button(__("Verify"), "verify", () => this.verifyConsumer()));
      return out;
    }

    extras() {
      const d = this.doc;
      if (this.isNew) return null;
      if (this.dt.name === "Event Sync Log" && d.conflict) {
        let c = {};
        try { c = JSON.parse(d.conflict); } catch (e) { c = {}; }
        const shown = (v) => (v === null || v === undefined || v === "" ? h("span", { class: "muted" }, __("(empty)"))
          : h("code", null, typeof v === "object" ? JSON.stringify(v) : String(v)));
        return h("div", { class: d.status === "Failed" ? "alert alert-error" : "card info-card", dataset: { role: "conflict" } },
          h("strong", null, d.status === "Failed" ? __("Changed here and on the producer: choose which version to keep.") : __("Conflict resolved.")), " ",
          d.status === "Failed" ? (d.error || "") : (d.resolution || ""),
          h("table", { class: "list-table" },
            h("thead", null, h("tr", null, h("th", null, __("Field")), h("th", null, __("This site")), h("th", null, __("Producer")))),
            h("tbody", null, (c.fields || []).map((f) => h("tr", { dataset: { field: f.field } },
              h("td", null, f.field), h("td", null, shown(f.here)), h("td", null, c.kind === "delete" ? __("(deleted)") : shown(f.incoming)))))));
      }
      if (this.dt.name === "Event Sync Log" && d.status === "Failed") {
        return h("div", { class: "alert alert-error", dataset: { role: "sync-error" } },
          h("strong", null, __("This update failed to sync.")), " ", d.error || "",
          d.next_retry ? h("div", { class: "small" }, __("Next automatic try: {0}", String(d.next_retry).slice(0, 19))) : null);
      }
      if (this.dt.name === "Event Update Log") {
        const consumers = (d.consumers || []).map((c) => c.consumer);
        return h("div", { class: "card info-card", dataset: { role: "consumers" } },
          h("h3", { class: "section-title" }, __("Received by")),
          consumers.length ? h("ul", { class: "chip-list" }, consumers.map((c) => h("li", { class: "chip" }, c)))
            : h("p", { class: "muted" }, __("No consumer has received this update yet.")));
      }
      return null;
    }

    rowActions(f) {
      if (this.dt.name !== "Event Consumer" || f.fieldname !== "consumer_doctypes" || this.isNew || !boot.is_system_manager) return null;
      return (row, i) => h("div", { class: "row-actions" },
        row.status !== "Approved" ? h("button", { type: "button", class: "btn btn-success btn-xs", dataset: { action: "approve" }, onclick: () => this.setApproval(i, "Approved") }, __("Approve")) : null,
        row.status !== "Rejected" ? h("button", { type: "button", class: "btn btn-danger-outline btn-xs", dataset: { action: "reject" }, onclick: () => this.setApproval(i, "Rejected") }, __("Reject")) : null);
    }

    async setApproval(i, status) {
      const rows = this.controls.consumer_doctypes.get().map((r) => Object.assign({}, r));
      rows[i].status = status;
      this.dirty.add("consumer_doctypes");
      this.controls.consumer_doctypes.set(rows);
      if (await this.save()) {
        this.show("success", __("{0}: {1}. The consumer has been told.", rows[i].ref_doctype, __(status)));
      }
    }

    async generateKeys() {
      if (!confirm(__("Generate new API keys for {0}? The old secret stops working.", this.doc.name))) return;
      try {
        const res = await api.call("frappe.core.doctype.user.user.generate_keys", { user: this.doc.name });
        this.doc = (await api.get(api.resource("User", this.doc.name))).data;
        this.draw();
        dialog(__("API keys of {0}", this.doc.name), [
          h("p", null, __("Copy the secret now: it is shown only once.")),
          h("label", { class: "field-label", for: "api-key" }, __("API Key")),
          copyBox("api-key", this.doc.api_key || ""),
          h("label", { class: "field-label", for: "api-secret" }, __("API Secret")),
          copyBox("api-secret", res.api_secret),
        ]);
      } catch (e) { this.showError(e); }
    }

    async resync() {
      try {
        this.show("info", __("Resyncing..."));
        const result = await api.call("frappe.event_streaming.doctype.event_producer.event_producer.resync", { update: this.doc.name });
        this.doc = (await api.get(api.resource(this.dt.name, this.doc.name))).data;
        this.draw();
        if (result === "Synced") this.show("success", __("Resync result: {0}", __(result)));
        else this.show("error", __("Resync result: {0}", __(String(result))));
      } catch (e) { this.showError(e); }
    }

    async resolve(keep) {
      try {
        const result = await api.call("docstream.streaming.resolve_conflict", { sync_log: this.doc.name, keep });
        this.doc = (await api.get(api.resource(this.dt.name, this.doc.name))).data;
        this.draw();
        this.show("success", __("Conflict resolved: {0}", __(String(result))));
      } catch (e) { this.showError(e); }
    }

    async verify() {
      try {
        this.show("info", __("Verifying..."));
        const r = await api.call("docstream.streaming.verify", { event_producer: this.doc.name, repair: 1 });
        const left = r.differences.length - r.repaired;
        if (!left) this.show("success", __("In step: {0} documents ({1} repaired)", r.documents, r.repaired));
        else this.show("error", __("{0} differences left ({1} repaired): {2}", left, r.repaired,
          r.differences.filter((d) => d.repair !== "repaired").map((d) => d.kind + " " + d.doctype + " " + d.name).join("; ")));
      } catch (e) { this.showError(e); }
    }

    async verifyConsumer() {
      try {
        this.show("info", __("Verifying..."));
        const r = await api.call("docstream.streaming.verify_consumer", { event_consumer: this.doc.name });
        if (!r.differences.length) this.show("success", __("The consumer holds what it was sent: {0} documents", r.documents));
        else this.show("error", __("{0} differences on the consumer (a producer cannot repair them): {1}", r.differences.length,
          r.differences.map((d) => d.kind + " " + d.doctype + " " + d.name).join("; ")));
      } catch (e) { this.showError(e); }
    }

    async pullNow() {
      try {
        this.show("info", __("Pulling..."));
        const n = await api.call("frappe.event_streaming.doctype.event_producer.event_producer.pull_from_node", { event_producer: this.doc.name });
        this.show("success", __("{0} updates applied", NUM.format(n || 0)));
      } catch (e) { this.showError(e); }
    }
  }

  function copyBox(id, value) {
    const input = h("input", { id, class: "input code", readonly: true, value });
    return h("div", { class: "copy-box" }, input,
      h("button", { type: "button", class: "btn btn-default btn-sm", onclick: async () => {
        input.select();
        try { await navigator.clipboard.writeText(value); toast(__("Copied"), "success"); } catch (_) { document.execCommand("copy"); }
      } }, __("Copy")));
  }

  function dialog(title, body) {
    const close = () => back.remove();
    const back = h("div", { class: "modal-back", onclick: (e) => { if (e.target === back) close(); } },
      h("div", { class: "modal", role: "dialog", "aria-modal": "true", "aria-label": title },
        h("div", { class: "modal-head" }, h("h2", null, title), h("button", { type: "button", class: "btn-icon", "aria-label": __("Close"), dataset: { action: "close-dialog" }, onclick: close }, "×")),
        h("div", { class: "modal-body" }, body),
        h("div", { class: "modal-foot" }, button(__("Done"), "dialog-done", close, "btn-primary"))));
    document.body.append(back);
    cleanup.push(close);
  }

  // ---------- streaming dashboard ----------

  async function dashboardView() {
    document.title = __("Streaming Dashboard") + " · docstream";
    const body = h("div", { class: "dash" }, h("div", { class: "loading" }, __("Loading...")));
    const updated = h("span", { class: "muted small" });
    setChildren(main, pageHead(__("Streaming Dashboard"), { badge: updated }, button(__("Refresh"), "refresh", () => load())), body);
    let timer;
    let alive = true;
    cleanup.push(() => { alive = false; clearTimeout(timer); });
    const typeChips = (types) => h("div", { class: "type-chips" }, types.map((t) => h("span", { class: "type-chip", title: __(t.unsubscribed ? "Unsubscribed" : t.status) },
      h("span", { class: "dot dot-" + (t.unsubscribed ? "gray" : (t.status === "Approved" ? "green" : t.status === "Rejected" ? "red" : "orange")) }), __(t.ref_doctype))));
    const lagEl = (n) => (n === null || n === undefined ? h("span", { class: "muted" }, "—") : h("span", { class: "lag " + (n > 0 ? "lag-behind" : "lag-ok") }, n > 0 ? __("{0} behind", NUM.format(n)) : __("Up to date")));
    const failedEl = (n, link, external, conflicts) => (n === null || n === undefined ? h("span", { class: "muted" }, "—")
      : n > 0 ? h("span", null, h("a", { class: "failed-link", href: link, target: external ? "_blank" : null, rel: external ? "noopener" : null, dataset: { role: "failures" } }, __("{0} failed", NUM.format(n))),
          conflicts ? h("div", { class: "small text-warn", dataset: { role: "conflicts" } }, __("{0} conflicts to resolve", NUM.format(conflicts))) : null)
        : h("span", { class: "muted" }, "0"));
    const table = (rows, kind) => h("div", { class: "table-wrap" }, h("table", { class: "list-table dash-table" },
      h("thead", null, h("tr", null, h("th", null, kind === "producer" ? __("Producer") : __("Consumer")), h("th", null, __("Status")), h("th", null, __("Document Types")), h("th", null, __("Lag")), h("th", null, __("Last Sync")), h("th", null, __("Failed")))),
      h("tbody", null, rows.map((r) => h("tr", { dataset: { url: r.url } },
        h("td", null, h("a", { href: docUrl(kind === "producer" ? "Event Producer" : "Event Consumer", r.url) }, r.url),
          r.unsent ? h("div", { class: "small text-warn" }, __("Last edit not yet sent")) : null,
          r.connection ? h("div", { class: "small " + (r.connection.connected ? "muted" : "text-warn"), dataset: { role: "connection" } },
            r.connection.connected ? __("Connects to this site: connected since {0}", r.connection.since || "") : __("Connects to this site: not connected now")) : null,
          r.error ? h("div", { class: "small text-error" }, r.error) : null,
          r.verified && r.verified.at ? h("div", { class: "small muted", dataset: { role: "verified" } },
            r.verified.documents === null ? __("Last verification could not compare")
              : r.verified.differences ? __("Last verification: {0} differences", r.verified.differences)
              : __("Verified in step: {0} documents, {1}", r.verified.documents, String(r.verified.at).slice(0, 19))) : null),
        h("td", null, pill(r.status)),
        h("td", null, typeChips(r.types)),
        h("td", null, lagEl(r.lag)),
        h("td", null, timeEl(r.last_sync)),
        h("td", { dataset: { role: "failed" } }, failedEl(r.failed, r.failures_link, kind === "consumer", r.conflicts)))))));
    // Scheduled backups: a failing or overdue schedule is shown in red, not only logged.
    const backupsEl = (b) => h("section", { class: "card dash-section", dataset: { role: "backups" } },
      h("h3", { class: "section-title" }, __("Backups"), h("span", { class: "muted small" }, " · " + (b.enabled
        ? __("every {0}, newest {1} kept in {2}", b.every, b.keep, b.folder) : __("scheduled backups are off")))),
      b.last_ok ? h("p", { class: "small" }, __("Last backup: {0} ({1}, {2} KB)", b.last_ok, b.last_file, NUM.format(Math.round(b.last_bytes / 1024))))
        : h("p", { class: "small muted" }, __("No scheduled backup written yet")),
      b.last_error ? h("p", { class: "small text-error", dataset: { role: "backup-error" } },
        __("Backups failing: {0} in a row, last at {1}: {2}", b.failures_in_a_row, b.last_error_at, b.last_error)) : null,
      b.overdue ? h("p", { class: "small text-error", dataset: { role: "backup-overdue" } }, __("No backup written for over two intervals")) : null);
    const stat = (n, text, cls) => h("div", { class: "stat card " + (cls || "") }, h("div", { class: "stat-n" }, n), h("div", { class: "muted small" }, text));
    async function load() {
      clearTimeout(timer);
      try {
        const d = await api.callGet("docstream.desk.streaming_dashboard");
        if (!alive) return;
        const failed = d.producers.reduce((a, p) => a + (p.failed || 0), 0);
        setChildren(body, 
          h("div", { class: "stats" },
            stat(NUM.format(d.producers.length), __("Producers")),
            stat(NUM.format(d.consumers.length), __("Consumers")),
            stat(NUM.format(failed), __("Failed syncs"), failed ? "stat-bad" : ""),
            stat(String(d.current_seq), __("Update log position"))),
          d.backups ? backupsEl(d.backups) : null,
          h("section", { class: "card dash-section" },
            h("h3", { class: "section-title" }, __("Producers"), h("span", { class: "muted small" }, " · " + __("sites this site receives documents from"))),
            d.producers.length ? table(d.producers, "producer") : h("p", { class: "muted" }, __("None yet."), " ", h("a", { href: "/app/event-producer/new" }, __("Add an Event Producer")))),
          h("section", { class: "card dash-section" },
            h("h3", { class: "section-title" }, __("Consumers"), h("span", { class: "muted small" }, " · " + __("sites that receive documents from this site"))),
            d.consumers.length ? table(d.consumers, "consumer") : h("p", { class: "muted" }, __("None yet: a consumer appears here when it adds this site as its Event Producer."))));
        updated.textContent = __("Updated {0}", new Date().toLocaleTimeString(LANG));
      } catch (e) {
        if (alive) setChildren(body, errorBox(e));
      }
      if (alive) timer = setTimeout(load, 5000);
    }
    await load();
  }

  shell();
  render();
})();
