// callout console: fills the pages from the JSON API with the session
// cookie. Every text goes in with textContent, never as HTML: incidents
// and calls carry text from alerts and mails.
"use strict";
(function () {
  const meta = (n) => (document.querySelector(`meta[name="${n}"]`) || {}).content || "";
  const csrf = meta("csrf");
  const page = meta("page");
  let P = {};
  try { P = JSON.parse((document.getElementById("phrases") || {}).textContent || "{}"); } catch (e) { P = {}; }
  const tr = (k) => P[k] || k;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "href") e.setAttribute("href", v);
      else e[k] = v;
    }
    for (const k of kids) {
      if (k === null || k === undefined) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }
  const time = (ms) => (ms ? new Date(ms).toLocaleString(document.documentElement.lang) : "");
  const ago = (ms) => {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    return s < 120 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
  };

  async function api(method, path, body) {
    const opt = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
    if (method !== "GET") {
      opt.headers["X-CSRF-Token"] = csrf;
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body || {});
    }
    const r = await fetch(path, opt);
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    if (r.status === 401) { location.href = "/console/login"; }
    return { status: r.status, body: j };
  }

  // Header: language switch and sign-out.
  const lang = document.getElementById("lang");
  if (lang) lang.addEventListener("click", () => {
    document.cookie = `callout_lang=${lang.dataset.lang}; Path=/; Max-Age=31536000; SameSite=Strict`;
    location.reload();
  });
  const out = document.getElementById("signout");
  if (out) out.addEventListener("click", async () => {
    await api("POST", "/console/logout", {});
    location.href = "/console/login";
  });
  const print = document.getElementById("print");
  if (print) print.addEventListener("click", () => window.print());
  const reload = document.getElementById("reload");
  if (reload) reload.addEventListener("click", async () => {
    const r = await api("POST", "/v1/dialplans/reload", {});
    document.getElementById("reloaded").textContent =
      r.status === 200 ? `reloaded ${r.body.reloaded}` : (r.body && (r.body.errors || []).join("\n")) || `HTTP ${r.status}`;
  });

  // ---- Live board ----
  const board = { notifications: new Map(), incidents: [] };

  function callRow(n, c) {
    const st = c.state || (c.answered_ms ? "talking" : "calling");
    const since = c.answered_ms || c.started_ms;
    return el("li", { class: `call ${st}`, "data-notification": n.id, "data-attempt": String(c.attempt) },
      el("span", { class: "who" }, c.contact || "?"), " ",
      el("span", { class: "state" }, tr(st)), " ",
      el("span", { class: "since", "data-ms": String(since || "") }, `${tr("since")} ${since ? ago(since) : ""}`), " ",
      el("span", { class: "keys" }, c.digits ? `${tr("keys")}: ${c.digits}` : ""));
  }

  function renderBoard() {
    const nbox = document.getElementById("notifications");
    const ibox = document.getElementById("incidents");
    if (!nbox) return;
    nbox.replaceChildren();
    for (const n of board.notifications.values()) {
      const calls = el("ul", { class: "calls" });
      for (const c of n.calls) calls.append(callRow(n, c));
      nbox.append(el("article", { class: `card sev-${n.severity}`, "data-id": n.id },
        el("h3", {}, el("a", { href: `/console/notifications/${encodeURIComponent(n.id)}` }, `${n.contract} · ${n.ticket}`)),
        el("p", {}, `${n.host}: ${n.summary}`),
        el("p", { class: "meta" }, `${n.state} · ${time(n.created_ms)}`), calls));
    }
    if (!board.notifications.size) nbox.append(el("p", { class: "empty" }, tr("none")));
    ibox.replaceChildren();
    for (const i of board.incidents) {
      const badges = [];
      const kind = (i.kind && i.kind.kind) || i.kind;
      if (kind === "monitoring_path" || kind === "heartbeat" || (i.holds || 0) > 0) badges.push(el("span", { class: "badge path" }, tr("monitoring")));
      if (i.state === "suppressed" || i.held_by) badges.push(el("span", { class: "badge suppressed" }, tr("suppressed")));
      ibox.append(el("article", { class: `card sev-${i.severity} state-${i.state}`, "data-id": i.id },
        el("h3", {}, el("a", { href: `/console/incidents/${encodeURIComponent(i.id)}` }, `${i.contract} · ${i.ticket || i.id}`), " ", ...badges),
        el("p", {}, `${i.host}: ${i.summary}`),
        el("p", { class: "meta" }, `${i.state} · ${time(i.opened_ms)}`)));
    }
    if (!board.incidents.length) ibox.append(el("p", { class: "empty" }, tr("none")));
  }

  async function loadBoard() {
    const r = await api("GET", "/console/api/board");
    if (r.status !== 200 || !r.body) return;
    board.notifications = new Map(r.body.notifications.map((n) => [n.id, n]));
    board.incidents = r.body.incidents;
    renderBoard();
  }

  function onEvent(v) {
    const ev = v.event || "";
    // An action's steps belong to its incident's page, not the board.
    if (ev.startsWith("action.")) return;
    const n = board.notifications.get(v.notification);
    if (!n) {
      if (!ev.startsWith("notification.") || ev === "notification.started" || ev === "notification.resumed") scheduleLoad();
      return;
    }
    const find = () => n.calls.find((c) => c.attempt === v.attempt);
    if (ev === "call.dialing") {
      n.calls.push({ attempt: v.attempt, contact: v.contact, started_ms: v.ts_ms, state: "calling", digits: "" });
    } else if (ev === "call.ringing") {
      const c = find(); if (c) c.state = "ringing";
    } else if (ev === "call.answered") {
      const c = find(); if (c) { c.state = "talking"; c.answered_ms = v.ts_ms; }
    } else if (ev === "digit") {
      const c = find(); if (c) c.digits = (c.digits || "") + (v.digit || "");
    } else if (ev === "call.ended" || ev === "call.failed") {
      n.calls = n.calls.filter((c) => c.attempt !== v.attempt);
    } else if (ev.startsWith("notification.") && ev !== "notification.started" && ev !== "notification.resumed") {
      board.notifications.delete(v.notification);
      scheduleLoad();
    }
    renderBoard();
    const live = document.getElementById("live");
    if (live) { live.textContent = `${ev} ${new Date().toLocaleTimeString()}`; live.dataset.lastEvent = ev; live.dataset.lastTs = String(v.ts_ms || ""); }
  }

  let pending = null;
  function scheduleLoad() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; loadBoard(); }, 250);
  }

  if (page === "board") {
    loadBoard();
    const es = new EventSource("/console/events");
    es.addEventListener("call", (e) => { try { onEvent(JSON.parse(e.data)); } catch (x) { /* ignore */ } });
    es.addEventListener("lagged", () => scheduleLoad());
    es.onopen = () => { document.body.dataset.live = "open"; scheduleLoad(); };
    setInterval(() => {
      for (const s of document.querySelectorAll(".since[data-ms]")) {
        const ms = Number(s.dataset.ms); if (ms) s.textContent = `${tr("since")} ${ago(ms)}`;
      }
    }, 1000);
    // Incidents change without call events (wait windows, recoveries).
    setInterval(scheduleLoad, 10000);
    const clock = document.getElementById("clock");
    if (clock) {
      const tick = () => { clock.textContent = new Date().toLocaleString(document.documentElement.lang); };
      tick();
      setInterval(tick, 1000);
    }
  }

  // ---- Notification and incident pages ----
  function facts(dl, pairs) {
    dl.replaceChildren();
    for (const [k, v] of pairs) { if (v === null || v === undefined || v === "") continue; dl.append(el("dt", {}, k), el("dd", {}, v)); }
  }
  function callsTable(tbl, attempts) {
    tbl.replaceChildren(el("tr", {}, el("th", {}, "#"), el("th", {}, tr("who")), el("th", {}, tr("since")), el("th", {}, tr("outcome")), el("th", {}, tr("keys")), el("th", {}, "SIP")));
    for (const a of attempts || []) {
      const o = a.outcome ? (a.outcome.outcome || JSON.stringify(a.outcome)) : "…";
      tbl.append(el("tr", { class: "attempt", "data-outcome": String(o) }, el("td", {}, a.attempt), el("td", {}, a.contact), el("td", {}, time(a.started_ms)),
        el("td", {}, o), el("td", {}, a.digits || ""), el("td", {}, a.sip_code || "")));
    }
  }
  function say(text) { const r = document.getElementById("result"); if (r) r.textContent = text; }

  async function cancelNotification(id, reason) {
    const r = await api("POST", `/v1/notifications/${encodeURIComponent(id)}/cancel`, { reason });
    say(r.status === 202 ? `cancelled: ${reason}` : `HTTP ${r.status} ${(r.body && r.body.detail) || ""}`);
  }
  // Acknowledge for someone on the phone: an acknowledgement (the
  // escalation ends `acked`, as by a key press), not a cancel.
  async function acknowledge(path, by) {
    const r = await api("POST", path, { by, reason: "acknowledged on the phone" });
    const ok = r.status === 202 || r.status === 200;
    say(ok ? `${tr("acknowledged")}: ${by}` : `HTTP ${r.status} ${(r.body && r.body.detail) || ""}`);
    const res = document.getElementById("result");
    if (res && ok) res.dataset.acknowledged = by;
  }
  function wireNotificationButtons(getId, ackPath) {
    const c = document.getElementById("cancel");
    if (c) c.addEventListener("click", () => { const id = getId(); if (id) cancelNotification(id, "cancelled by an operator in the console"); });
    const a = document.getElementById("ackfor");
    if (a) a.addEventListener("click", () => {
      const input = document.getElementById("ackby");
      const who = input ? input.value.trim() : "";
      if (!who) { say(tr("ack_who")); if (input) input.focus(); return; }
      const path = ackPath(); if (!path) return;
      acknowledge(path, who);
    });
  }

  if (page === "notification") {
    const id = document.getElementById("notification").dataset.id;
    wireNotificationButtons(() => id, () => `/v1/notifications/${encodeURIComponent(id)}/acknowledge`);
    (async () => {
      const r = await api("GET", `/v1/notifications/${encodeURIComponent(id)}`);
      if (r.status !== 200) { document.getElementById("facts").textContent = `HTTP ${r.status}`; return; }
      const n = r.body;
      facts(document.getElementById("facts"), [["contract", n.contract], [tr("ticket"), n.ticket], ["host", n.host], ["summary", n.summary], ["state", n.state], ["acked_by", n.acked_by], ["created", time(n.created_ms)], ["cancel", n.cancel_reason]]);
      callsTable(document.getElementById("calls"), n.attempts);
      const tl = document.getElementById("timeline");
      for (const a of n.attempts || []) {
        tl.append(el("li", { class: "event" }, `${time(a.started_ms)} call ${a.attempt} → ${a.contact}`));
        if (a.answered_ms) tl.append(el("li", { class: "event" }, `${time(a.answered_ms)} answered`));
        if (a.ended_ms) tl.append(el("li", { class: "event" }, `${time(a.ended_ms)} ended: ${a.outcome ? a.outcome.outcome : ""} ${a.digits ? "keys " + a.digits : ""}`));
      }
      for (const x of n.actions || []) tl.append(el("li", { class: "event action" }, `${time(x.started_ms)} action ${x.action}: ${x.state}`));
      if (n.final) tl.append(el("li", { class: "event final" }, `${time(n.final.at_ms)} ${n.final.state}`));
    })();
  }

  if (page === "incident") {
    const id = document.getElementById("incident").dataset.id;
    let inc = null;
    wireNotificationButtons(() => inc && inc.notification, () => `/v1/incidents/${encodeURIComponent(id)}/acknowledge`);
    const close = document.getElementById("close");
    if (close) close.addEventListener("click", async () => {
      const r = await api("POST", `/v1/incidents/${encodeURIComponent(id)}/close`, {});
      say(r.status === 200 ? "closed" : `HTTP ${r.status} ${(r.body && r.body.detail) || ""}`);
    });
    (async () => {
      const r = await api("GET", `/v1/incidents/${encodeURIComponent(id)}`);
      if (r.status !== 200) { document.getElementById("facts").textContent = `HTTP ${r.status}`; return; }
      inc = r.body;
      facts(document.getElementById("facts"), [["contract", inc.contract], [tr("ticket"), inc.ticket], ["host", inc.host], ["kind", (inc.kind && inc.kind.kind) || inc.kind], ["state", inc.state], ["severity", inc.severity], ["summary", inc.summary], ["acked_by", inc.acked_by], ["opened", time(inc.opened_ms)], ["closed", time(inc.closed_ms)]]);
      const tl = document.getElementById("timeline");
      for (const t of inc.timeline || []) {
        const li = el("li", { class: `event kind-${t.kind}`, "data-kind": t.kind }, el("time", {}, time(t.at_ms)), " ", el("span", { class: "kind" }, t.kind), " ", t.text);
        if (t.data && t.data.excerpt) li.append(el("pre", {}, String(t.data.excerpt)));
        tl.append(li);
      }
      if (inc.notification) {
        const n = await api("GET", `/v1/notifications/${encodeURIComponent(inc.notification)}`);
        if (n.status === 200) {
          callsTable(document.getElementById("calls"), n.body.attempts);
          // The message its callees hear, playable here.
          const au = document.getElementById("message-audio");
          if (au) { au.src = `/v1/notifications/${encodeURIComponent(inc.notification)}/audio`; document.getElementById("audio-box").hidden = false; }
        }
      }
      const box = document.getElementById("actions");
      if (box) {
        const c = await api("GET", `/v1/contracts/${encodeURIComponent(inc.contract)}`);
        const acts = (c.status === 200 && c.body && c.body.actions) ? Object.keys(c.body.actions) : [];
        for (const a of acts) {
          const b = el("button", { type: "button", class: "action", "data-action": a }, `${tr("dry_run")}: ${a}`);
          b.addEventListener("click", () => dryRun(a));
          box.append(b);
        }
      }
    })();
    async function dryRun(action) {
      const path = `/v1/incidents/${encodeURIComponent(id)}/actions/${encodeURIComponent(action)}`;
      const r = await api("POST", path, { dry_run: true });
      const plan = document.getElementById("plan");
      if (r.status !== 200) { plan.textContent = `HTTP ${r.status} ${(r.body && r.body.detail) || ""}`; return; }
      plan.textContent = r.body.text;
      const old = document.getElementById("confirm");
      if (old) old.remove();
      const go = el("button", { type: "button", id: "confirm" }, `${tr("confirm")}: ${action}`);
      go.addEventListener("click", async () => {
        go.disabled = true;
        say("…");
        // The run's steps arrive on the live feed while the request waits.
        const box = document.getElementById("progress-box");
        const list = document.getElementById("progress");
        list.replaceChildren();
        box.hidden = false;
        let runId = null;
        const es = new EventSource("/console/events");
        es.addEventListener("call", (e) => {
          let v = null; try { v = JSON.parse(e.data); } catch (x) { return; }
          const ev = v.event || "";
          if (!ev.startsWith("action.")) return;
          if (ev === "action.started") {
            if (runId || v.action !== action || v.contract !== inc.contract) return;
            runId = v.run && v.run.run_id;
            list.append(el("li", { class: "step started" }, `${time(v.ts_ms)} started ${v.flow} on ${v.host || ""}: ${(v.steps || []).map((s) => s.name).join(", ")}`));
          } else if (runId && v.run_id === runId && ev === "action.step") {
            const st = v.step || {};
            const li = el("li", { class: `step outcome-${st.outcome || ""}`, "data-step": st.name || "" },
              `${time(st.started_ms)} ${st.phase || ""} ${st.name || ""} (${st.attempt || 1}): ${st.outcome || ""}${st.exit_code !== undefined && st.exit_code !== null ? " exit " + st.exit_code : ""}`);
            if (st.stdout) li.append(el("pre", {}, String(st.stdout)));
            list.append(li);
          } else if (runId && v.run_id === runId && ev === "action.finished") {
            list.append(el("li", { class: "step finished", "data-result": v.result || "" }, `${time(v.ts_ms)} ${v.result || ""}`));
          }
        });
        await new Promise((ok) => { es.onopen = ok; setTimeout(ok, 2000); });
        const x = await api("POST", path, { confirm: r.body.confirm });
        setTimeout(() => es.close(), 1000);
        say(x.status === 200 ? `${x.body.result || ""}` : `HTTP ${x.status} ${(x.body && x.body.detail) || ""}`);
        const res = document.getElementById("result");
        if (res && x.status === 200) res.dataset.result = x.body.result || "";
      });
      plan.after(go);
    }
  }
})();
