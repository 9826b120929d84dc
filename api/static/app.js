// shipdeck web console: plain ES modules, no build step. It uses only the REST tools and the
// chat WebSocket, like any other client.

const I18N = {
  en: {
    "nav.home": "My releases", "nav.inbox": "Approvals", "nav.targets": "Targets", signout: "Sign out",
    "signin.title": "Sign in", "signin.token": "API token", "signin.go": "Sign in",
    "signin.bad": "That token is unknown or revoked.", "signin.sso": "Sign in with single sign-on", "home.releases": "My releases",
    "home.chat": "Chat", "chat.placeholder": "deploy web 1.4.2 to prod", "chat.send": "Send",
    "chat.label": "Message", none: "Nothing here yet.", "inbox.title": "Approval inbox",
    project: "Project", environment: "Environment", risk: "Risk", state: "State", mine: "Mine only",
    any: "any", "inbox.approve": "Approve selected", "inbox.reject": "Reject selected",
    "inbox.again": "Tap again to confirm", "inbox.select": "Select", release: "Release",
    requested: "Requested by", steps: "Steps", "release.title": "Release", diff: "Changes",
    approvals: "Approvals", timeline: "Timeline", approve: "Approve", reject: "Reject",
    confirm: "Confirm", cancel: "Cancel", submit: "Submit", apply: "Apply",
    "targets.title": "Targets", runtime: "Runtime", services: "Services", health: "Health",
    simulated: "simulated", live: "live", offline: "reconnecting…", expires: "expires in",
    expired: "expired", "card.closed": "This card was already decided or closed.",
    "card.expired": "This card expired: re-preview the release.", decided: "decided",
    done: "Done", "lang.switch": "中文",
  },
  zh: {
    "nav.home": "我的发布", "nav.inbox": "审批", "nav.targets": "目标环境", signout: "退出",
    "signin.title": "登录", "signin.token": "API 令牌", "signin.go": "登录", "signin.sso": "单点登录",
    "signin.bad": "令牌无效或已吊销。", "home.releases": "我的发布", "home.chat": "对话",
    "chat.placeholder": "部署 web 1.4.2 到生产", "chat.send": "发送", "chat.label": "消息",
    none: "暂无内容。", "inbox.title": "审批收件箱", project: "项目", environment: "环境",
    risk: "风险", state: "状态", mine: "只看我的", any: "全部", "inbox.approve": "批准所选",
    "inbox.reject": "拒绝所选", "inbox.again": "再点一次确认", "inbox.select": "选择",
    release: "发布", requested: "申请人", steps: "步骤", "release.title": "发布", diff: "变更",
    approvals: "审批", timeline: "时间线", approve: "批准", reject: "拒绝", confirm: "确认",
    cancel: "取消", submit: "提交", apply: "执行", "targets.title": "目标环境", runtime: "运行时",
    services: "服务", health: "健康", simulated: "模拟", live: "已连接", offline: "重新连接中…",
    expires: "剩余", expired: "已过期", "card.closed": "这张卡片已被处理或关闭。",
    "card.expired": "卡片已过期：请重新预览。", decided: "已处理", done: "完成",
    "lang.switch": "English",
  },
};

const state = {
  token: sessionStorage.getItem("shipdeck.token"),
  lang: localStorage.getItem("shipdeck.lang") || (navigator.language.startsWith("zh") ? "zh" : "en"),
  me: null, ws: null, sessionId: sessionStorage.getItem("shipdeck.session"),
  cards: new Map(), chat: [], retry: 0, selected: new Set(),
};
const $ = (sel, root = document) => root.querySelector(sel);
const t = (key) => (I18N[state.lang] && I18N[state.lang][key]) || I18N.en[key] || key;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const badge = (s) => `<span class="state ${esc(s)}">${esc(s)}</span>`;
const isPhone = () => window.matchMedia("(max-width: 760px)").matches;

function toast(text) {
  const box = $("#toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, "X-Shipdeck-Channel": "page",
               "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : response.statusText);
    error.code = body.error ? body.error.code : String(response.status);
    throw error;
  }
  return body;
}

function translate() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("#lang").textContent = t("lang.switch");
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
  ws.onopen = () => { state.retry = 0; setLive(true); };
  ws.onmessage = (event) => onFrame(JSON.parse(event.data));
  ws.onclose = (event) => {
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

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
  else toast(t("offline"));
}

function onFrame(frame) {
  switch (frame.type) {
    case "session":
      state.sessionId = frame.session_id;
      sessionStorage.setItem("shipdeck.session", frame.session_id);
      state.chat = frame.history.filter((f) => f.type === "user_message" || f.type === "assistant_message")
        .map((f) => ({ role: f.type === "user_message" ? "user" : "assistant", text: f.text }));
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
      drawChat();
      refreshLive(frame.card.release_id);
      break;
    case "release_update":
      refreshLive(frame.release_id);
      break;
    case "error": {
      const text = frame.code === "card_expired" ? t("card.expired")
        : frame.code === "card_closed" ? t("card.closed") : frame.message;
      state.chat.push({ role: "error", text });
      drawChat();
      toast(text);
      break;
    }
    default:
      break;
  }
}

// Pages showing data that a live frame may have changed re-read it (debounced).
function refreshLive(releaseId) {
  clearTimeout(refreshLive.timer);
  refreshLive.timer = setTimeout(() => {
    const route = location.hash || "#/";
    if (route === "#/" || route.startsWith("#/inbox") || (releaseId && route === `#/releases/${releaseId}`)) {
      render({ keepChat: true });
    }
  }, 150);
}

// ------------------------------------------------------------------ chat

function cardHtml(card) {
  const diff = Object.entries(card.diff || {}).flatMap(([service, fields]) =>
    Object.entries(fields).map(([field, c]) => `<div>${esc(service)} ${esc(field)}: ${esc(c.before)} → ${esc(c.after)}</div>`)).join("");
  const risk = card.risk ? `${t("risk")}: ${badge(card.risk.level)}` : "";
  const expires = card.expires_at ? `<span class="countdown" data-expires="${esc(card.expires_at)}"></span>` : "";
  const actions = (card.actions || []).map((action) =>
    `<button type="button" class="${action === "approve" || action === "confirm" ? "primary" : "danger"}" data-card="${esc(card.id)}" data-action="${esc(action)}">${esc(t(action))}</button>`).join("");
  const sim = card.simulated ? ` <span class="sim">(${t("simulated")})</span>` : "";
  const closed = card.state !== "open";
  return `<div class="card ${closed ? "closed" : ""}" role="group" aria-label="${esc(card.title)}" data-card-id="${esc(card.id)}">
    <strong>${esc(card.title)}</strong>${sim}
    <div class="muted">${card.release_id ? `<a href="#/releases/${esc(card.release_id)}">${esc(card.release_id)}</a> · ` : ""}${esc(card.project || "")}/${esc(card.environment || "")} ${card.lifecycle_state ? badge(card.lifecycle_state) : ""} ${risk} ${expires}</div>
    <div class="diff">${diff}</div>
    ${closed ? `<div class="muted">${esc(card.state)}${card.outcome ? `: ${esc(card.outcome)}` : ""}</div>` : `<div class="actions">${actions}</div>`}
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
  send({ type: "card_action", card_id: button.dataset.card, action: button.dataset.action });
  button.disabled = true;
});

// ------------------------------------------------------------------ pages

async function home(main, options) {
  const page = await api("/api/v1/releases?limit=50");
  const mine = page.items.filter((r) => r.requested_by === state.me.name);
  const rows = mine.map((r) => `<tr><td><a href="#/releases/${esc(r.id)}">${esc(r.id)}</a></td><td>${esc(r.project)}/${esc(r.environment)}</td><td>${badge(r.lifecycle_state)}</td></tr>`).join("");
  if (options.keepChat && $("#chat-log")) {
    $("#my-releases").innerHTML = rows || `<tr><td colspan="3" class="muted">${t("none")}</td></tr>`;
    return;
  }
  main.innerHTML = `<div class="grid">
    <section class="panel" aria-labelledby="h-rel"><h1 id="h-rel">${t("home.releases")}</h1>
      <table><thead><tr><th>${t("release")}</th><th>${t("project")}</th><th>${t("state")}</th></tr></thead>
      <tbody id="my-releases">${rows || `<tr><td colspan="3" class="muted">${t("none")}</td></tr>`}</tbody></table></section>
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
    send({ type: "user_message", text });
    input.value = "";
  });
}

async function inbox(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "mine=true&state=pending");
  const page = await api(`/api/v1/approvals?${params}`);
  const select = (name, values) => `<label>${t(name)}<select name="${name}"><option value="">${t("any")}</option>${values.map((v) => `<option ${params.get(name) === v ? "selected" : ""}>${v}</option>`).join("")}</select></label>`;
  const targets = await api("/api/v1/targets");
  const projects = [...new Set(targets.items.map((x) => x.project))];
  const envs = [...new Set(targets.items.map((x) => x.environment))];
  const rows = page.items.map((a) => `<tr>
      <td><input type="checkbox" aria-label="${t("inbox.select")} ${esc(a.release_id)}" value="${esc(a.release_id)}" ${a.can_decide ? "" : "disabled"} ${a.can_decide && state.selected.has(a.release_id) ? "checked" : ""}></td>
      <td><a href="#/releases/${esc(a.release_id)}">${esc(a.release_id)}</a></td>
      <td>${esc(a.project)}/${esc(a.environment)}</td><td>${badge(a.risk)}</td><td>${badge(a.state)}</td>
      <td>${esc(a.requested_by)}</td>
      <td>${a.steps.map((s) => `${esc(s.group)} ${s.approved_by.length}/${s.count}`).join(" → ")}</td></tr>`).join("");
  main.innerHTML = `<h1>${t("inbox.title")}</h1>
    <form class="filters" id="filters">${select("project", projects)}${select("environment", envs)}
      ${select("risk", ["low", "medium", "high"])}${select("state", ["pending", "approved", "rejected", "cancelled", "expired", "void"])}
      <label><span>${t("mine")}</span><input type="checkbox" name="mine" ${params.get("mine") === "true" ? "checked" : ""}></label></form>
    <div class="actions"><button class="primary" id="batch-approve" type="button">${t("inbox.approve")}</button>
      <button class="danger" id="batch-reject" type="button">${t("inbox.reject")}</button></div>
    <table><thead><tr><th></th><th>${t("release")}</th><th>${t("project")}</th><th>${t("risk")}</th><th>${t("state")}</th><th>${t("requested")}</th><th>${t("steps")}</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="7" class="muted">${t("none")}</td></tr>`}</tbody></table>`;
  // Live refreshes re-render the table: selections survive them.
  main.querySelector("tbody").addEventListener("change", (event) => {
    const box = event.target;
    if (box.checked) state.selected.add(box.value); else state.selected.delete(box.value);
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
      if (isPhone() && !button.dataset.armed) {  // phones ask for a second tap
        button.dataset.armed = "1";
        const label = button.textContent;
        button.textContent = t("inbox.again");
        setTimeout(() => { delete button.dataset.armed; button.textContent = label; }, 4000);
        return;
      }
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

async function releasePage(main, id) {
  const [release, timeline] = await Promise.all([api(`/api/v1/releases/${id}`), api(`/api/v1/releases/${id}/timeline`)]);
  const diff = Object.entries(release.preview ? release.preview.diff : {}).flatMap(([service, fields]) =>
    Object.entries(fields).map(([field, c]) => `<tr><td>${esc(service)}</td><td>${esc(field)}</td><td>${esc(c.before)}</td><td>${esc(c.after)}</td></tr>`)).join("");
  const approval = release.approval;
  const steps = approval ? approval.steps.map((s, i) => `<li>${i + 1}. ${esc(s.group)}: ${s.approved_by.map(esc).join(", ") || "—"} (${s.approved_by.length}/${s.count})</li>`).join("") : "";
  const entries = timeline.entries.map((e) => e.kind === "audit"
    ? `<li><time>${esc(new Date(e.at).toLocaleTimeString())}</time> <strong>${esc(e.action)}</strong> ${esc(e.actor)}${e.on_behalf_of ? ` (${esc(e.on_behalf_of)})` : ""} · ${esc(e.channel)} ${e.after_state ? `${esc(e.before_state || "∅")} → ${badge(e.after_state)}` : ""}</li>`
    : `<li class="progress ${e.level === "error" ? "error" : ""}"><time>${esc(new Date(e.at).toLocaleTimeString())}</time> ${esc(e.service || "")} ${esc(e.message)}</li>`).join("");
  const buttons = [];
  if (approval && approval.can_decide) buttons.push(["approve", "approve"], ["reject", "reject"]);
  if (release.requested_by === state.me.name) {
    if (release.lifecycle_state === "previewed") buttons.push(["submit", "submit"]);
    if (release.lifecycle_state === "approved") buttons.push(["apply", "apply"]);
    if (["previewed", "pending_approval", "approved"].includes(release.lifecycle_state)) buttons.push(["cancel", "cancel"]);
  }
  main.innerHTML = `<h1>${t("release.title")} ${esc(release.id)} ${badge(release.lifecycle_state)}</h1>
    <p>${esc(release.project)}/${esc(release.environment)} · ${esc(release.runtime)}${release.simulated ? ` <span class="sim">(${t("simulated")})</span>` : ""} · ${t("requested")} ${esc(release.requested_by)}${release.reason ? ` · ${esc(release.reason)}` : ""}</p>
    <div class="actions">${buttons.map(([key, action]) => `<button type="button" data-release-action="${action}" class="${action === "cancel" || action === "reject" ? "danger" : "primary"}">${t(key)}</button>`).join("")}</div>
    <div class="grid"><section class="panel"><h2>${t("diff")}</h2><table><tbody>${diff}</tbody></table>
      ${release.preview ? `<p>${t("risk")}: ${badge(release.preview.risk.level)} ${release.preview.risk.reasons.map(esc).join("; ")}</p>` : ""}
      <h2>${t("approvals")}</h2>${approval ? `<p>${badge(approval.state)} ${esc(approval.policy_reason)}</p><ul>${steps}</ul>` : `<p class="muted">${t("none")}</p>`}</section>
    <section class="panel"><h2>${t("timeline")}</h2><ol class="timeline">${entries}</ol></section></div>`;
  main.querySelectorAll("[data-release-action]").forEach((button) => button.addEventListener("click", async () => {
    const action = button.dataset.releaseAction;
    const path = ["approve", "reject"].includes(action) ? `/api/v1/approvals/${id}/${action}` : `/api/v1/releases/${id}/${action}`;
    try { await api(path, { method: "POST", body: "{}" }); } catch (error) { toast(error.message); }
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
    return `<tr><td>${esc(x.project)}</td><td>${esc(x.environment)}</td><td>${esc(x.runtime)}${x.simulated ? ` <span class="sim">(${t("simulated")})</span>` : ""}</td><td>${badge(x.risk_tier)}</td><td>${services}</td></tr>`;
  }).join("");
  main.innerHTML = `<h1>${t("targets.title")}</h1><table><thead><tr><th>${t("project")}</th><th>${t("environment")}</th><th>${t("runtime")}</th><th>${t("risk")}</th><th>${t("services")}</th></tr></thead><tbody>${rows}</tbody></table>`;
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

async function render(options = {}) {
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
  try {
    if (route.startsWith("#/inbox")) await inbox(main);
    else if (route.startsWith("#/releases/")) await releasePage(main, route.slice("#/releases/".length));
    else if (route.startsWith("#/targets")) await targetsPage(main);
    else await home(main, options);
  } catch (error) {
    main.innerHTML = `<p role="alert" class="msg error"><span>${esc(error.message)}</span></p>`;
  }
}

$("#lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("shipdeck.lang", state.lang);
  render();
});
function signOut(message = "") {
  sessionStorage.clear();
  Object.assign(state, { token: null, me: null, sessionId: null, chat: [] });
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
