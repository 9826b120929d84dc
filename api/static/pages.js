// The dashboard and the release history.
import { $, api, badge, dayAfter, dayStart, envSort, esc, state, stateName, t, when } from "/static/common.js";
import { frozenHtml, frozenOf, targetFreezes } from "/static/desk.js";

const tag = (image) => { const i = String(image || "").lastIndexOf(":"); return i > 0 ? image.slice(i + 1) : image; };

// Project x environment: what runs (per service), its health, the last release, what waits.
// Calls: targets, pending approvals, then one status and one newest release per target.
export async function dashboard(main) {
  const [targets, pending] = await Promise.all([
    api("/api/v1/targets"), api("/api/v1/approvals?state=pending&limit=200"),
  ]);
  const [statuses, lasts] = await Promise.all([
    Promise.all(targets.items.map((x) => api(`/api/v1/targets/${x.project}/${x.environment}`).catch((e) => ({ error: e.message })))),
    Promise.all(targets.items.map((x) => api(`/api/v1/releases?project=${x.project}&environment=${x.environment}&limit=1`).catch(() => ({ items: [] })))),
  ]);
  const projects = [...new Set(targets.items.map((x) => x.project))].sort();
  const envs = [...new Set(targets.items.map((x) => x.environment))].sort(envSort);
  const cell = (project, env) => {
    const i = targets.items.findIndex((x) => x.project === project && x.environment === env);
    if (i < 0) return `<td class="empty" data-label="${esc(env)}">—</td>`;
    const target = targets.items[i], status = statuses[i], last = lasts[i].items[0];
    const services = status.error ? `<div class="muted">${esc(status.error)}</div>`
      : Object.entries(status.services).map(([name, s]) => `<div class="svc"><span>${esc(name)}</span> <code title="${esc(s.image)}">${esc(tag(s.image))}</code> ${badge(s.health)}</div>`).join("")
        || `<div class="muted">${t("dash.noservices")}</div>`;
    const waiting = pending.items.filter((a) => a.project === project && a.environment === env);
    const waits = waiting.length ? `<div class="waits"><a href="#/inbox?project=${esc(project)}&environment=${esc(env)}&state=pending">${waiting.length} ${t("dash.waiting")}</a>: ${waiting.map((a) => `<a href="#/releases/${esc(a.release_id)}">${esc(a.release_id)}</a>`).join(", ")}</div>` : "";
    const lastHtml = last ? `<div class="last">${t("dash.last")}: <a href="#/releases/${esc(last.id)}">${esc(last.id)}</a> ${badge(last.lifecycle_state)} ${esc(last.requested_by)} · ${when(last.updated_at)}</div>` : "";
    return `<td data-target="${esc(project)}/${esc(env)}">
      <div class="cell-head"><a href="#/targets/${esc(project)}/${esc(env)}">${esc(env)}</a> ${badge(target.risk_tier)}${target.simulated ? ` <span class="sim">(${t("simulated")})</span>` : ""}</div>
      ${frozenHtml(frozenOf(null, () => target.frozen || []))}
      ${services}${lastHtml}${waits}</td>`;
  };
  const rows = projects.map((p) => `<tr><th scope="row">${esc(p)}</th>${envs.map((e) => cell(p, e)).join("")}</tr>`).join("");
  const inbox = state.inboxCount ? `<p class="inbox-count"><a href="#/inbox">${t("dash.inbox")}: <strong>${state.inboxCount}</strong></a></p>` : "";
  main.innerHTML = `<h1>${t("dash.title")}</h1>${inbox}
    <table class="matrix stack" aria-label="${esc(t("dash.title"))}"><thead><tr><th>${t("project")}</th>${envs.map((e) => `<th>${esc(e)}</th>`).join("")}</tr></thead>
    <tbody>${rows || `<tr><td class="muted">${t("none")}</td></tr>`}</tbody></table>`;
}

export function releaseRows(items, columns = ["id", "target", "state", "requester", "when"]) {
  const col = {
    id: (r) => `<td data-label="${esc(t("release"))}"><a href="#/releases/${esc(r.id)}">${esc(r.id)}</a></td>`,
    target: (r) => `<td data-label="${esc(t("project"))}">${esc(r.project)}/${esc(r.environment)}</td>`,
    state: (r) => `<td data-label="${esc(t("state"))}">${badge(r.lifecycle_state)}</td>`,
    requester: (r) => `<td data-label="${esc(t("requested"))}">${esc(r.requested_by)}</td>`,
    when: (r) => `<td data-label="${esc(t("when"))}">${when(r.updated_at)}</td>`,
  };
  return items.map((r) => `<tr>${columns.map((c) => col[c](r)).join("")}</tr>`).join("")
    || `<tr><td colspan="${columns.length}" class="muted">${t("none")}</td></tr>`;
}

const STATE_NAMES = ["previewed", "pending_approval", "approved", "rejected", "cancelled", "expired", "applying", "applied", "failed", "rolling_back", "rolled_back", "rollback_failed"];

// Filters run on the server (project, environment, service, state, requester, time, text), paged
// by the `before` cursor.
export async function history(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const query = new URLSearchParams();
  for (const key of ["project", "environment", "service", "state", "requested_by", "text", "before"]) if (params.get(key)) query.set(key, params.get(key));
  if (params.get("since")) query.set("since", dayStart(params.get("since")));
  if (params.get("until")) query.set("until", dayAfter(params.get("until")));
  query.set("limit", "25");
  const [page, targets] = await Promise.all([api(`/api/v1/releases?${query}`), api("/api/v1/targets")]);
  const projects = [...new Set(targets.items.map((x) => x.project))].sort();
  const envs = [...new Set(targets.items.map((x) => x.environment))].sort(envSort);
  const services = [...new Set(targets.items.flatMap((x) => x.services || []))].sort();
  const select = (name, values, label = (v) => v) => `<label>${t(name === "requested_by" ? "history.requester" : name === "service" ? "history.service" : name)}<select name="${name}"><option value="">${t("any")}</option>${values.map((v) => `<option value="${esc(v)}" ${params.get(name) === v ? "selected" : ""}>${esc(label(v))}</option>`).join("")}</select></label>`;
  const older = new URLSearchParams(params);
  if (page.next_before) older.set("before", page.next_before);
  const newest = new URLSearchParams(params);
  newest.delete("before");
  main.innerHTML = `<h1>${t("history.title")}</h1>
    <form class="filters" id="history-filters">
      <label class="grow">${t("history.text")}<input type="search" name="text" maxlength="200" placeholder="${esc(t("history.textHint"))}" value="${esc(params.get("text") || "")}"></label>
      ${select("project", projects)}${select("environment", envs)}${select("service", services)}
      <label>${t("state")}<select name="state"><option value="">${t("any")}</option>${STATE_NAMES.map((s) => `<option value="${s}" ${params.get("state") === s ? "selected" : ""}>${esc(stateName(s))}</option>`).join("")}</select></label>
      <label>${t("history.requester")}<input name="requested_by" maxlength="64" placeholder="${esc(t("history.requesterHint"))}" value="${esc(params.get("requested_by") || "")}"></label>
      <label>${t("since")}<input type="date" name="since" value="${esc(params.get("since") || "")}"></label>
      <label>${t("until")}<input type="date" name="until" value="${esc(params.get("until") || "")}"></label>
      <label><span>${t("mine")}</span><input type="checkbox" name="mine" ${params.get("requested_by") === "me" ? "checked" : ""}></label>
      <button type="submit">${t("filter")}</button></form>
    <table class="stack" id="history"><thead><tr><th>${t("release")}</th><th>${t("project")}</th><th>${t("state")}</th><th>${t("requested")}</th><th>${t("when")}</th></tr></thead>
    <tbody>${releaseRows(page.items)}</tbody></table>
    <nav class="pager" aria-label="pages">${params.get("before") ? `<a href="#/history?${newest}">${t("history.newest")}</a>` : ""}
      ${page.next_before ? `<a href="#/history?${older}" id="older">${t("history.older")}</a>` : ""}</nav>`;
  const form = $("#history-filters");
  const apply = (event) => {
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const [key, value] of data.entries()) if (String(value).trim() && key !== "mine") next.set(key, String(value).trim());
    if (event && event.target.name === "mine") { if (event.target.checked) next.set("requested_by", "me"); else next.delete("requested_by"); }
    location.hash = `#/history?${next}`;
  };
  // Typed filters (text, requester, dates: a date input changes at every digit of its year) wait
  // for Enter or the button; the menus and the checkbox apply at once.
  form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT" || event.target.type === "checkbox") apply(event); });
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(null); });
}

// One target: its services and its recent releases.
export async function targetPage(main, project, environment) {
  const [status, recent, targets] = await Promise.all([
    api(`/api/v1/targets/${project}/${environment}`),
    api(`/api/v1/releases?project=${project}&environment=${environment}&limit=10`),
    api(`/api/v1/targets?project=${encodeURIComponent(project)}`),
  ]);
  const frozen = frozenOf(null, () => targetFreezes(targets.items)({ project, environment }));
  const services = Object.entries(status.services).map(([name, s]) => `<tr><td data-label="${esc(t("services"))}">${esc(name)}</td><td data-label="image"><code>${esc(s.image)}</code> ×${esc(s.replicas)}</td><td data-label="${esc(t("health"))}">${badge(s.health)}</td></tr>`).join("");
  main.innerHTML = `<h1>${esc(project)}/${esc(environment)}</h1>
    <p>${esc(status.runtime)}${status.simulated ? ` <span class="sim">(${t("simulated")})</span>` : ""}${status.active_release ? ` · <a href="#/releases/${esc(status.active_release)}">${esc(status.active_release)}</a>` : ""}
      · <a href="#/targets/${esc(project)}/${esc(environment)}/logs" id="logs-link">${t("logs.link")} →</a></p>
    ${frozen ? `<p>${frozenHtml(frozen)}</p>` : ""}
    <h2>${t("services")}</h2><table class="stack"><tbody>${services || `<tr><td class="muted">${t("dash.noservices")}</td></tr>`}</tbody></table>
    <h2>${t("history.title")}</h2><table class="stack"><tbody>${releaseRows(recent.items)}</tbody></table>
    <p><a href="#/history?project=${esc(project)}&environment=${esc(environment)}">${t("history.older")} →</a></p>`;
}
