// shipdeck web console: plain ES modules, no build step. It uses only the REST tools and the
// chat WebSocket, like any other client.

import { $, TERMINAL, ago, api, badge, clock, esc, isPhone, reasonText, state, stateName, t, toast } from "/static/common.js";
import { auditPage, frozenHtml, frozenOf, releaseLogsPage, targetFreezes, targetLogsPage } from "/static/desk.js";
import { dashboard, history, releaseRows, targetPage } from "/static/pages.js";

function translate() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = t("lang.switch");
  const live = $("#live");
  if (live.className.includes(" on")) live.textContent = t("live");
  else if (live.className.includes(" off")) live.textContent = t("offline");
}

// ------------------------------------------------------------------ live connection

// The token never goes into a URL: each (re)connection trades it for a single-use ticket.
async function connect() {
  if (!state.token) return;
  const token = state.token;
  let ticket;
  try {
    ticket = (await api("/api/v1/chat/tickets", { method: "POST" })).ticket;
  } catch (error) {
    if (state.token !== token) return;
    if (error.code === "not_authenticated") { signOut(t("signin.bad")); return; }
    retry();
    return;
  }
  if (state.token !== token) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const session = state.sessionId ? `&session=${encodeURIComponent(state.sessionId)}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/chat?ticket=${encodeURIComponent(ticket)}${session}`);
  state.ws = ws;
  state.ready = false;
  ws.onopen = () => { state.retry = 0; setLive(true); };
  ws.onmessage = (event) => onFrame(JSON.parse(event.data));
  ws.onclose = (event) => {
    if (state.ws === ws) state.ready = false;
    setLive(false);
    if (state.ws !== ws || !state.token) return;
    if (event.code === 1008) { signOut(t("signin.bad")); return; }  // revoked or expired
    retry();
  };
}

function retry() {
  const delay = Math.min(10000, 500 * 2 ** state.retry++);
  setTimeout(() => { connect(); render(); }, delay);  // reconnect, then resync the page
}

function setLive(on) {
  const live = $("#live");
  live.className = `live ${on ? "on" : "off"}`;
  live.textContent = on ? t("live") : t("offline");
}

const UNSENT_LIMIT = 20;

function send(frame) {
  if (state.ready && state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(frame));
    return;
  }
  toast(t("offline"));
  // A message typed while the socket connects goes once the session is back (its history
  // replaces the log, and the message would vanish unsent). A card's button never waits:
  // a decision is made on what the card shows now.
  if (frame.type === "user_message" && state.token && state.unsent.length < UNSENT_LIMIT) {
    state.unsent.push(frame);
  }
}

function sendUnsent() {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const frames = state.unsent;
  state.unsent = [];
  for (const frame of frames) {
    state.chat.push({ role: "user", text: frame.text });
    state.ws.send(JSON.stringify(frame));
  }
}

function onFrame(frame) {
  switch (frame.type) {
    case "session":
      state.sessionId = frame.session_id;
      sessionStorage.setItem("shipdeck.session", frame.session_id);
      state.chat = frame.history.filter((f) => f.type === "user_message" || f.type === "assistant_message")
        .map((f) => ({ role: f.type === "user_message" ? "user" : "assistant", text: f.text }));
      state.ready = true;
      sendUnsent();
      drawChat();
      break;
    case "assistant_delta":
      if (!state.streaming) { state.streaming = { role: "assistant", text: "" }; state.chat.push(state.streaming); }
      state.streaming.text += frame.text;
      drawChat();
      break;
    case "assistant_message":
      if (state.streaming) { state.streaming.text = frame.text; state.streaming = null; }
      else state.chat.push({ role: "assistant", text: frame.text });
      drawChat();
      break;
    case "card":
      state.cards.set(frame.card.id, frame.card);
      if (!state.chat.some((m) => m.card === frame.card.id)) state.chat.push({ role: "card", card: frame.card.id });
      if (frame.card.release_id) follow(frame.card.release_id, { state: frame.card.lifecycle_state });
      drawChat();
      refreshLive(frame.card.release_id);
      break;
    case "release_update":
      if (frame.message) follow(frame.release_id, { line: { level: frame.level, service: frame.service, message: frame.message } });
      else follow(frame.release_id, { state: frame.lifecycle_state, actor: frame.actor });
      refreshLive(frame.release_id);
      break;
    case "error": {
      // A card whose release moved on says why, never only that it expired.
      const moved = frame.card_id && movedOn(state.cards.get(frame.card_id));
      const text = moved || (frame.code === "card_expired" ? t("card.expired")
        : frame.code === "card_closed" ? t("card.closed") : reasonText(frame.message));
      state.chat.push({ role: "error", text });
      drawChat();
      toast(text);
      break;
    }
    default:
      break;
  }
}

// What the cards of a release show about it: the live state, why it ended, the last log lines.
function follow(releaseId, change) {
  const known = state.releases.get(releaseId) || { state: null, reason: null, lines: [] };
  if (change.line) known.lines = [...known.lines, change.line].slice(-3);
  if (change.state && change.state !== known.state) {
    known.state = change.state;
    if (TERMINAL.includes(change.state)) fetchOutcome(releaseId);
  }
  state.releases.set(releaseId, known);
  drawChat();
}

async function fetchOutcome(releaseId) {
  try {
    const [release, timeline] = await Promise.all([api(`/api/v1/releases/${releaseId}`), api(`/api/v1/releases/${releaseId}/timeline`)]);
    const known = state.releases.get(releaseId) || { lines: [] };
    known.state = release.lifecycle_state;
    known.reason = release.reason;
    const lines = timeline.entries.filter((e) => e.kind === "progress").slice(-3);
    if (lines.length) known.lines = lines.map((e) => ({ level: e.level, service: e.service, message: e.message }));
    state.releases.set(releaseId, known);
    drawChat();
  } catch (error) { /* the card keeps what the live events said */ }
}

function movedOn(card) {
  if (!card || !card.release_id) return "";
  const known = state.releases.get(card.release_id);
  const now = (known && known.state) || card.lifecycle_state;
  if (!now || ["previewed", "pending_approval", "approved"].includes(now)) return "";
  const why = known && known.reason ? `: ${reasonText(known.reason)}` : "";
  return `${card.release_id} ${stateName(now)}${why}`;
}

// Pages showing data that a live frame may have changed re-read it (debounced).
function refreshLive(releaseId) {
  clearTimeout(refreshLive.timer);
  refreshLive.timer = setTimeout(() => {
    const route = location.hash || "#/";
    if (["#/", "#/chat"].includes(route) || route.startsWith("#/inbox") || (releaseId && [`#/releases/${releaseId}`, `#/releases/${releaseId}/logs`].includes(route))) {
      render({ keepChat: true });
    }
  }, 150);
}

// ------------------------------------------------------------------ chat

const TITLES = { submit_release: "title.submit", apply_release: "title.apply", approve_release: "title.approve", reject_release: "title.reject", cancel_release: "title.cancel" };

// English titles come from the server; other languages build them from the card's fields.
function cardTitle(card) {
  if (state.lang === "en" || !card.release_id) return card.title;
  const key = card.kind === "approval" ? "title.approval" : TITLES[card.tool];
  return key ? t(key, { id: card.release_id, where: `${card.project}/${card.environment}`, who: card.requested_by }) : card.title;
}

function cardHtml(card) {
  const diff = Object.entries(card.diff || {}).flatMap(([service, fields]) =>
    Object.entries(fields).map(([field, c]) => `<div>${esc(service)} ${esc(field)}: ${esc(c.before)} → ${esc(c.after)}</div>`)).join("");
  const risk = card.risk ? `${t("risk")}: ${badge(card.risk.level)}` : "";
  const closed = card.state !== "open";
  const expires = card.expires_at && !closed ? `<span class="countdown" data-expires="${esc(card.expires_at)}"></span>` : "";
  const actions = (card.actions || []).map((action) =>
    `<button type="button" class="${action === "approve" || action === "confirm" ? "primary" : "danger"}" data-card="${esc(card.id)}" data-action="${esc(action)}">${esc(t(action))}</button>`).join("");
  const sim = card.simulated ? ` <span class="sim">(${t("simulated")})</span>` : "";
  const known = card.release_id ? state.releases.get(card.release_id) : null;
  const now = (known && known.state) || card.lifecycle_state;
  const title = cardTitle(card);
  const frozen = card.state === "open" ? frozenOf(card, state.freezes) : null;
  // The release's live outcome, updated in place: applying, applied, failed with the reason.
  const showOutcome = known && known.state && (closed || !["previewed", "pending_approval", "approved"].includes(known.state));
  const outcome = showOutcome ? `<div class="outcome" data-outcome="${esc(known.state)}">${t("card.now")}: ${badge(known.state)}${known.reason ? ` <span class="reason">${esc(reasonText(known.reason))}</span>` : ""}
    ${known.lines.length && ["applying", "failed", "applied", "rollback_failed"].includes(known.state) ? `<pre class="lines" aria-label="${esc(t("card.lines"))}">${known.lines.map((l) => `${esc(l.service || "")} ${esc(l.message)}`).join("\n")}</pre>` : ""}</div>` : "";
  let closing = "";
  if (closed) {
    const moved = movedOn(card);
    const text = card.state === "void" && moved ? moved : reasonText(card.outcome);
    closing = `<div class="muted closing">${esc(stateName(card.state))}${text ? `: ${esc(text)}` : ""}</div>`;
  }
  return `<div class="card ${closed ? "closed" : ""}" role="group" aria-label="${esc(title)}" data-card-id="${esc(card.id)}">
    <strong>${esc(title)}</strong>${sim}
    <div class="muted">${card.release_id ? `<a href="#/releases/${esc(card.release_id)}">${esc(card.release_id)}</a> · ` : ""}${esc(card.project || "")}/${esc(card.environment || "")} ${now && !showOutcome ? badge(now) : ""} ${risk} ${expires}</div>
    ${frozen ? `<div>${frozenHtml(frozen)}</div>` : ""}
    <div class="diff">${diff}</div>
    ${closed ? closing : `<div class="actions">${actions}</div>`}${outcome}
  </div>`;
}

function drawChat() {
  const log = $("#chat-log");
  if (!log) return;
  log.innerHTML = state.chat.map((m) => m.role === "card"
    ? cardHtml(state.cards.get(m.card))
    : `<div class="msg ${m.role}"><span>${esc(m.text)}</span></div>`).join("") || `<p class="muted">${t("none")}</p>`;
  log.scrollTop = log.scrollHeight;
  tick();
}

function tick() {
  document.querySelectorAll(".countdown").forEach((el) => {
    const left = Math.round((new Date(el.dataset.expires) - Date.now()) / 1000);
    el.textContent = left > 0 ? `${t("expires")} ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}` : t("expired");
  });
}
setInterval(tick, 1000);

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-card]");
  if (!button) return;
  send({ type: "card_action", card_id: button.dataset.card, action: button.dataset.action, lang: state.lang });
  button.disabled = true;
});

// ------------------------------------------------------------------ pages

async function chatPage(main, options) {
  const [page, targets] = await Promise.all([api("/api/v1/releases?requested_by=me&limit=10"), api("/api/v1/targets")]);
  state.freezes = targetFreezes(targets.items);
  const rows = releaseRows(page.items, ["id", "target", "state"]);
  if (options.keepChat && $("#chat-log")) {
    $("#my-releases").innerHTML = rows;
    drawChat();
    return;
  }
  main.innerHTML = `<div class="grid">
    <section class="panel" aria-labelledby="h-rel"><h1 id="h-rel">${t("home.releases")}</h1>
      <table class="stack"><thead><tr><th>${t("release")}</th><th>${t("project")}</th><th>${t("state")}</th></tr></thead>
      <tbody id="my-releases">${rows}</tbody></table>
      <p><a href="#/history?requested_by=me">${t("nav.history")} →</a></p></section>
    <section class="panel" aria-labelledby="h-chat"><h1 id="h-chat">${t("home.chat")}</h1>
      <div id="chat-log" class="chat-log" aria-live="polite"></div>
      <form class="row" id="chat-form"><label for="chat-input" class="muted">${t("chat.label")}</label>
        <input id="chat-input" autocomplete="off" placeholder="${esc(t("chat.placeholder"))}" maxlength="4000">
        <button class="primary" type="submit">${t("chat.send")}</button></form></section></div>`;
  drawChat();
  $("#chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#chat-input");
    const text = input.value.trim();
    if (!text) return;
    state.chat.push({ role: "user", text });
    drawChat();
    send({ type: "user_message", text, lang: state.lang });
    input.value = "";
  });
}

async function inbox(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "mine=true&state=pending");
  const page = await api(`/api/v1/approvals?${params}`);
  const select = (name, values) => `<label>${t(name)}<select name="${name}"><option value="">${t("any")}</option>${values.map((v) => `<option value="${esc(v)}" ${params.get(name) === v ? "selected" : ""}>${esc(name === "risk" || name === "state" ? stateName(v) : v)}</option>`).join("")}</select></label>`;
  const targets = await api("/api/v1/targets");
  const freezes = targetFreezes(targets.items);
  const projects = [...new Set(targets.items.map((x) => x.project))];
  const envs = [...new Set(targets.items.map((x) => x.environment))];
  const rows = page.items.map((a) => `<tr>
      <td class="pick"><input type="checkbox" aria-label="${t("inbox.select")} ${esc(a.release_id)}" value="${esc(a.release_id)}" ${a.can_decide ? "" : "disabled"} ${a.can_decide && state.selected.has(a.release_id) ? "checked" : ""}></td>
      <td data-label="${esc(t("release"))}"><a href="#/releases/${esc(a.release_id)}">${esc(a.release_id)}</a></td>
      <td data-label="${esc(t("project"))}">${esc(a.project)}/${esc(a.environment)}${frozenHtml(frozenOf(a, freezes))}</td><td data-label="${esc(t("risk"))}">${badge(a.risk)}</td><td data-label="${esc(t("state"))}">${badge(a.state)}</td>
      <td data-label="${esc(t("requested"))}">${esc(a.requested_by)}</td>
      <td data-label="${esc(t("steps"))}">${a.steps.map((s) => `${esc(s.group)} ${s.approved_by.length}/${s.count}`).join(" → ")}</td></tr>`).join("");
  main.innerHTML = `<h1>${t("inbox.title")}</h1>
    <form class="filters" id="filters">${select("project", projects)}${select("environment", envs)}
      ${select("risk", ["low", "medium", "high"])}${select("state", ["pending", "approved", "rejected", "cancelled", "expired", "void"])}
      <label><span>${t("mine")}</span><input type="checkbox" name="mine" ${params.get("mine") === "true" ? "checked" : ""}></label></form>
    <div class="actions"><button class="primary" id="batch-approve" type="button">${t(armed("approve") ? "inbox.again" : "inbox.approve")}</button>
      <button class="danger" id="batch-reject" type="button">${t(armed("reject") ? "inbox.again" : "inbox.reject")}</button></div>
    <table class="stack"><thead><tr><th></th><th>${t("release")}</th><th>${t("project")}</th><th>${t("risk")}</th><th>${t("state")}</th><th>${t("requested")}</th><th>${t("steps")}</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="7" class="muted">${t("none")}</td></tr>`}</tbody></table>`;
  // Live refreshes re-render the table: selections survive them.
  main.querySelector("tbody").addEventListener("change", (event) => {
    const box = event.target;
    if (box.checked) state.selected.add(box.value); else state.selected.delete(box.value);
    if (state.armed) { state.armed = null; paintBatch(); }  // a new selection asks again
  });
  $("#filters").addEventListener("change", () => {
    const form = new FormData($("#filters"));
    const next = new URLSearchParams();
    for (const [key, value] of form.entries()) if (value) next.set(key, key === "mine" ? "true" : value);
    location.hash = `#/inbox?${next}`;
  });
  for (const [id, action] of [["#batch-approve", "approve"], ["#batch-reject", "reject"]]) {
    $(id).addEventListener("click", async (event) => {
      const button = event.currentTarget;
      const ids = [...main.querySelectorAll("tbody input:checked")].map((box) => box.value);
      if (!ids.length) return;
      if (isPhone() && !armed(action)) {  // phones ask for a second tap
        const arm = { action, route: location.hash, until: Date.now() + 4000 };
        state.armed = arm;
        paintBatch();
        setTimeout(() => {
          if (state.armed === arm) state.armed = null;
          paintBatch();
        }, 4000);
        return;
      }
      state.armed = null;
      paintBatch();
      state.selected.clear();
      try {
        const result = await api("/api/v1/approvals/batch", { method: "POST", body: JSON.stringify({ action, release_ids: ids }) });
        const failed = result.items.filter((i) => !i.ok);
        toast(failed.length ? failed.map((i) => `${i.release_id}: ${i.error.message}`).join("\n") : t("done"));
      } catch (error) { toast(error.message); }
      render();
    });
  }
}

// A phone's first tap arms its button for 4 s. The arming lives in `state`, not on the button,
// so a live refresh that re-renders the inbox between the two taps does not swallow the first;
// another page, filter or selection disarms it.
function armed(action) {
  const arm = state.armed;
  return Boolean(arm && arm.action === action && arm.route === location.hash && Date.now() < arm.until);
}

// Both batch buttons say what a tap on them does now (a live refresh may have replaced them).
function paintBatch() {
  for (const action of ["approve", "reject"]) {
    const button = $(`#batch-${action}`);
    if (button) button.textContent = t(armed(action) ? "inbox.again" : `inbox.${action}`);
  }
}

// The release-page buttons core may allow (`allowed_actions`), and where each one posts.
const RELEASE_ACTIONS = {
  submit: (id) => `/api/v1/releases/${id}/submit`,
  apply: (id) => `/api/v1/releases/${id}/apply`,
  cancel: (id) => `/api/v1/releases/${id}/cancel`,
  repreview: (id) => `/api/v1/releases/${id}/preview`,
  approve: (id) => `/api/v1/approvals/${id}/approve`,
  reject: (id) => `/api/v1/approvals/${id}/reject`,
  takeover: (id) => `/api/v1/approvals/${id}/takeover`,
  // These two make a new release: the page moves to it.
  retry: (id) => `/api/v1/releases/${id}/retry`,
  rollback: () => "/api/v1/rollbacks",
};

async function releasePage(main, id) {
  const [release, timeline] = await Promise.all([api(`/api/v1/releases/${id}`), api(`/api/v1/releases/${id}/timeline`)]);
  // Until core sends `frozen` on releases, the target's frozen reasons stand in (see desk.js).
  const targets = "frozen" in release ? { items: [] } : await api(`/api/v1/targets?project=${encodeURIComponent(release.project)}`);
  const frozen = TERMINAL.includes(release.lifecycle_state) ? null : frozenOf(release, targetFreezes(targets.items));
  const diff = Object.entries(release.preview ? release.preview.diff : {}).flatMap(([service, fields]) =>
    Object.entries(fields).map(([field, c]) => `<tr><td>${esc(service)}</td><td>${esc(field)}</td><td>${esc(c.before)}</td><td>${esc(c.after)}</td></tr>`)).join("");
  const approval = release.approval;
  const steps = approval ? approval.steps.map((s, i) => `<li>${i + 1}. ${esc(s.group)}: ${s.approved_by.map(esc).join(", ") || "—"} (${s.approved_by.length}/${s.count})</li>`).join("") : "";
  const entries = timeline.entries.map((e) => e.kind === "audit"
    ? `<li><time datetime="${esc(e.at)}">${esc(clock(e.at))}</time> <strong>${esc(e.action)}</strong> ${esc(e.actor)}${e.on_behalf_of ? ` (${esc(e.on_behalf_of)})` : ""} · ${esc(e.channel)} ${e.after_state ? `${esc(e.before_state || "∅")} → ${badge(e.after_state)}` : ""}</li>`
    : `<li class="progress ${e.level === "error" ? "error" : ""}"><time>${esc(clock(e.at))}</time> ${esc(e.service || "")} ${esc(e.message)}</li>`).join("");
  // Core computes what the caller may do (`allowed_actions`); the console never re-derives it.
  const buttons = (release.allowed_actions || []).filter((a) => a in RELEASE_ACTIONS).map((a) => [a, a]);
  main.innerHTML = `<h1>${t("release.title")} ${esc(release.id)} ${badge(release.lifecycle_state)}</h1>
    <p>${esc(release.project)}/${esc(release.environment)} · ${esc(release.runtime)}${release.simulated ? ` <span class="sim">(${t("simulated")})</span>` : ""} · ${t("requested")} ${esc(release.requested_by)} · ${esc(ago(release.updated_at))}${release.reason ? ` · <span class="reason">${esc(reasonText(release.reason))}</span>` : ""}
      · <a href="#/releases/${esc(release.id)}/logs" id="logs-link">${t("logs.link")} →</a></p>
    ${frozen ? `<p>${frozenHtml(frozen)}</p>` : ""}
    <div class="actions">${buttons.map(([key, action]) => `<button type="button" data-release-action="${action}" class="${action === "cancel" || action === "reject" ? "danger" : "primary"}">${t(key)}</button>`).join("")}</div>
    <div class="grid"><section class="panel"><h2>${t("diff")}</h2><table class="stack"><tbody>${diff}</tbody></table>
      ${release.preview ? `<p>${t("risk")}: ${badge(release.preview.risk.level)} ${release.preview.risk.reasons.map(esc).join("; ")}</p>` : ""}
      <p><a href="#/targets/${esc(release.project)}/${esc(release.environment)}">${esc(release.project)}/${esc(release.environment)} →</a></p>
      <h2>${t("approvals")}</h2>${approval ? `<p>${badge(approval.state)} ${esc(approval.policy_reason)}</p><ul>${steps}</ul>` : `<p class="muted">${t("none")}</p>`}</section>
    <section class="panel"><h2>${t("timeline")}</h2><ol class="timeline">${entries}</ol></section></div>`;
  main.querySelectorAll("[data-release-action]").forEach((button) => button.addEventListener("click", async () => {
    const action = button.dataset.releaseAction;
    let body = {};
    if (action === "reject" || action === "cancel") {  // a rejection says why
      const reason = window.prompt(t("reason"));
      if (reason === null) return;
      body = action === "reject" ? { comment: reason || null } : { reason: reason || null };
    }
    if (action === "rollback") body = { project: release.project, environment: release.environment, services: Object.keys(release.changes || {}) };
    let made = null;
    try { made = await api(RELEASE_ACTIONS[action](id), { method: "POST", body: JSON.stringify(body) }); } catch (error) { toast(reasonText(error.message)); }
    if (made && made.id && made.id !== release.id) { location.hash = `#/releases/${made.id}`; return; }
    render();
  }));
}

async function targetsPage(main) {
  const targets = await api("/api/v1/targets");
  const statuses = await Promise.all(targets.items.map((x) =>
    api(`/api/v1/targets/${x.project}/${x.environment}`).catch((error) => ({ error: error.message }))));
  const rows = targets.items.map((x, i) => {
    const status = statuses[i];
    const services = status.error ? `<span class="muted">${esc(status.error)}</span>`
      : Object.entries(status.services).map(([name, s]) => `<div>${esc(name)}: ${esc(s.image)} ×${s.replicas} ${badge(s.health)}</div>`).join("");
    return `<tr><td data-label="${esc(t("project"))}">${esc(x.project)}</td><td data-label="${esc(t("environment"))}"><a href="#/targets/${esc(x.project)}/${esc(x.environment)}">${esc(x.environment)}</a></td><td data-label="${esc(t("runtime"))}">${esc(x.runtime)}${x.simulated ? ` <span class="sim">(${t("simulated")})</span>` : ""}</td><td data-label="${esc(t("risk"))}">${badge(x.risk_tier)}</td><td data-label="${esc(t("services"))}">${services}</td></tr>`;
  }).join("");
  main.innerHTML = `<h1>${t("targets.title")}</h1><table class="stack"><thead><tr><th>${t("project")}</th><th>${t("environment")}</th><th>${t("runtime")}</th><th>${t("risk")}</th><th>${t("services")}</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function signIn(main, message = "") {
  main.innerHTML = `<section class="panel signin"><h1>${t("signin.title")}</h1>
    <form id="signin"><label for="token">${t("signin.token")}</label>
      <div class="row signin-row"><input id="token" type="password" autocomplete="off" required>
      <button class="primary" type="submit">${t("signin.go")}</button></div>
      <p id="signin-error" role="alert" class="muted">${esc(message)}</p></form>
    <p id="sso" hidden><a class="button" href="/api/v1/auth/oidc/login">${t("signin.sso")}</a></p></section>`;
  authConfig().then((config) => { if (config.oidc && $("#sso")) $("#sso").hidden = false; });
  $("#signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.token = $("#token").value.trim();
    try {
      state.me = await api("/api/v1/me");
      sessionStorage.setItem("shipdeck.token", state.token);
      connect();
      render();
    } catch (error) {
      state.token = null;
      $("#signin-error").textContent = error.code === "not_authenticated" ? t("signin.bad") : error.message;
    }
  });
}

// Renders run one after another: a slow page must never paint over the page opened after it.
let rendering = Promise.resolve();
function render(options = {}) {
  rendering = rendering.then(() => renderNow(options), () => renderNow(options));
  return rendering;
}

async function renderNow(options) {
  translate();
  const main = $("#main");
  if (!state.token) { $("#nav").hidden = true; $("#signout").hidden = true; signIn(main); return; }
  try {
    if (!state.me) state.me = await api("/api/v1/me");
  } catch (error) {
    sessionStorage.removeItem("shipdeck.token");
    state.token = null;
    signIn(main, t("signin.bad"));
    return;
  }
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = state.me.name;
  const route = location.hash || "#/";
  document.querySelectorAll("nav a").forEach((a) => a.setAttribute("aria-current", route.split("?")[0] === a.getAttribute("href") ? "page" : "false"));
  await inboxCount();
  // Tests (and screen readers' users) can tell a finished page from a stale one.
  delete main.dataset.view;
  try {
    const target = route.match(/^#\/targets\/([^/?]+)\/([^/?]+)$/);
    const targetLogs = route.match(/^#\/targets\/([^/?]+)\/([^/?]+)\/logs$/);
    const releaseLogs = route.match(/^#\/releases\/([^/?]+)\/logs$/);
    if (route.startsWith("#/inbox")) await inbox(main);
    else if (releaseLogs) await releaseLogsPage(main, releaseLogs[1]);
    else if (targetLogs) await targetLogsPage(main, targetLogs[1], targetLogs[2]);
    else if (route.startsWith("#/audit")) await auditPage(main);
    else if (route.startsWith("#/releases/")) await releasePage(main, route.slice("#/releases/".length));
    else if (target) await targetPage(main, target[1], target[2]);
    else if (route.startsWith("#/targets")) await targetsPage(main);
    else if (route.startsWith("#/history")) await history(main);
    else if (route.startsWith("#/chat")) await chatPage(main, options);
    else await dashboard(main);
  } catch (error) {
    main.innerHTML = `<p role="alert" class="msg error"><span>${esc(error.message)}</span></p>`;
  }
  if ((location.hash || "#/") === route) main.dataset.view = `${route}|${state.lang}`;
}

// Approvers see how many tickets wait for them on every page (the nav) and on the dashboard.
async function inboxCount() {
  try {
    const page = await api("/api/v1/approvals?mine=true&state=pending&limit=200");
    state.inboxCount = page.items.filter((a) => a.can_decide).length;
  } catch (error) { state.inboxCount = 0; }
  const count = $("#inbox-count");
  count.textContent = String(state.inboxCount);
  count.hidden = !state.inboxCount;
}

$("#lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("shipdeck.lang", state.lang);
  render();
});
function signOut(message = "") {
  sessionStorage.clear();
  Object.assign(state, { token: null, me: null, sessionId: null, chat: [], unsent: [], ready: false });
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  render().then(() => { if (message && $("#signin-error")) $("#signin-error").textContent = message; });
}
$("#signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => render());

async function authConfig() {
  if (!authConfig.cached) authConfig.cached = fetch("/api/v1/auth/config").then((r) => r.json()).catch(() => ({}));
  return authConfig.cached;
}

// After an OpenID Connect sign-in the server holds a one-time hand-off in an HttpOnly
// cookie; trading it here gives this tab its token without it ever being in a URL.
async function pickUpSignIn() {
  if (state.token || !(await authConfig()).oidc) return;
  const response = await fetch("/api/v1/auth/oidc/session", { method: "POST", credentials: "same-origin" });
  if (!response.ok) return;
  const body = await response.json();
  state.token = body.token;
  sessionStorage.setItem("shipdeck.token", state.token);
}
// For tests and support: drop the live socket to exercise reconnect + resync.
window.shipdeckDebug = { dropSocket: () => state.ws && state.ws.close() };
pickUpSignIn().finally(() => { connect(); render(); });
