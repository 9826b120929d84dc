// The audit page, the logs and diagnostics views, and how a freeze is shown everywhere.
import { $, api, badge, clock, locale, dayAfter, dayStart, esc, reasonText, state, t, toast, when } from "/static/common.js";

// ------------------------------------------------------------------ frozen

// `frozen` ({reason, until, declared_by, window} or null) comes with releases, inbox items and
// cards once core sends it. Until then (the field absent) the target's own `frozen` reasons,
// which core computes for targets, stand in; null from core means not frozen.
export function frozenOf(item, targetReasons) {
  if (item && Object.prototype.hasOwnProperty.call(item, "frozen")) {
    const f = item.frozen;
    if (!f) return null;
    if (typeof f === "string") return { text: f };
    return f;
  }
  const reasons = targetReasons ? targetReasons(item) : [];
  return reasons && reasons.length ? { text: reasons.join("; ") } : null;
}

export function frozenHtml(frozen) {
  if (!frozen) return "";
  let text = frozen.text || "";
  if (!text) {
    const window = frozen.window && typeof frozen.window === "object"
      ? [frozen.window.kind, frozen.window.cron, frozen.window.timezone].filter(Boolean).join(" ")
      : frozen.window;
    const parts = [];
    if (frozen.until) parts.push(t("frozen.until", { until: new Date(frozen.until).toLocaleString(locale()) }));
    if (frozen.declared_by) parts.push(t("frozen.by", { who: frozen.declared_by }));
    if (window) parts.push(t("frozen.window", { window }));
    text = parts.join(" · ") + (frozen.reason ? `: ${frozen.reason}` : "");
  }
  return `<span class="frozen" data-frozen><span class="state frozen-badge">${esc(t("frozen"))}</span> <span class="frozen-text">${esc(reasonText(text))}</span></span>`;
}

// project/environment -> the reasons core gives for the target being frozen now.
export function targetFreezes(targets) {
  const byTarget = new Map(targets.map((x) => [`${x.project}/${x.environment}`, x.frozen || []]));
  return (item) => (item ? byTarget.get(`${item.project}/${item.environment}`) || [] : []);
}

// ------------------------------------------------------------------ audit

// Actions core records (a suggestion list; any action name can be typed).
const ACTIONS = ["preview", "repreview", "submit", "approve", "reject", "cancel", "takeover", "apply", "applied", "fail", "rollback", "rolled_back", "expire", "abandon", "queue", "dequeue", "freeze", "lift_freeze", "freeze_passed", "promote", "promotion_override", "auto_apply_refused", "declaration_loaded", "user_added", "token_issued", "token_revoked", "signed_in", "audit_archived"];

function dataSummary(data) {
  const text = Object.entries(data || {}).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("; ");
  return text.length > 240 ? `${text.slice(0, 240)}…` : text;
}

// Events newest first, filtered on the server; the chain's verification; export for auditors.
export async function auditPage(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const query = new URLSearchParams();
  for (const key of ["project", "release_id", "actor", "action", "before"]) if (params.get(key)) query.set(key, params.get(key));
  if (params.get("since")) query.set("since", dayStart(params.get("since")));
  if (params.get("until")) query.set("until", dayAfter(params.get("until")));
  query.set("limit", "50");
  const [page, targets, verified] = await Promise.all([
    api(`/api/v1/audit?${query}`), api("/api/v1/targets"),
    api("/api/v1/audit/verify").catch((error) => ({ error: error.message })),
  ]);
  const projects = [...new Set(targets.items.map((x) => x.project))].sort();
  const input = (name, label, extra = "") => `<label>${t(label)}<input name="${name}" value="${esc(params.get(name) || "")}" ${extra}></label>`;
  const rows = page.items.map((e) => `<tr>
      <td data-label="#">${esc(e.seq)}</td><td data-label="${esc(t("when"))}">${when(e.at)}</td>
      <td data-label="${esc(t("audit.actor"))}">${esc(e.actor)}${e.on_behalf_of ? ` (${esc(e.on_behalf_of)})` : ""} <span class="muted">${esc(e.channel)}</span></td>
      <td data-label="${esc(t("audit.action"))}"><strong>${esc(e.action)}</strong></td>
      <td data-label="${esc(t("project"))}">${esc(e.project || "—")}${e.release_id ? ` · <a href="#/releases/${esc(e.release_id)}">${esc(e.release_id)}</a>` : ""}</td>
      <td data-label="${esc(t("state"))}">${e.after_state ? `${e.before_state ? badge(e.before_state) : "∅"} → ${badge(e.after_state)}` : ""}</td>
      <td data-label="${esc(t("audit.data"))}" class="data">${esc(dataSummary(e.data))}</td></tr>`).join("");
  const older = new URLSearchParams(params);
  if (page.next_before) older.set("before", String(page.next_before));
  const newest = new URLSearchParams(params);
  newest.delete("before");
  main.innerHTML = `<h1>${t("audit.title")}</h1>
    ${verifyHtml(verified)}
    <form class="filters" id="audit-filters">
      <label>${t("project")}<select name="project"><option value="">${t("any")}</option>${projects.map((p) => `<option ${params.get("project") === p ? "selected" : ""}>${esc(p)}</option>`).join("")}</select></label>
      ${input("release_id", "release", 'maxlength="24" placeholder="R-42" pattern="[Rr]?-?[0-9]{1,12}"')}
      ${input("actor", "audit.actor", 'maxlength="64" pattern="[A-Za-z0-9][A-Za-z0-9_\\-]{0,63}"')}
      <label>${t("audit.action")}<input name="action" list="audit-actions" maxlength="48" pattern="[a-z][a-z0-9_]{0,47}" value="${esc(params.get("action") || "")}"></label>
      <datalist id="audit-actions">${ACTIONS.map((a) => `<option value="${a}">`).join("")}</datalist>
      ${input("since", "since", 'type="date"')}${input("until", "until", 'type="date"')}
      <button type="submit">${t("filter")}</button></form>
    <div class="actions export"><span class="muted">${t("audit.export")}</span>
      <button type="button" data-export="jsonl">JSONL</button><button type="button" data-export="csv">CSV</button></div>
    <table class="stack" id="audit"><thead><tr><th>#</th><th>${t("when")}</th><th>${t("audit.actor")}</th><th>${t("audit.action")}</th><th>${t("project")}</th><th>${t("state")}</th><th>${t("audit.data")}</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="7" class="muted">${t("none")}</td></tr>`}</tbody></table>
    <nav class="pager" aria-label="pages">${params.get("before") ? `<a href="#/audit?${newest}">${t("history.newest")}</a>` : ""}
      ${page.next_before ? `<a href="#/audit?${older}" id="older">${t("history.older")}</a>` : ""}</nav>`;
  const form = $("#audit-filters");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form).entries()) if (String(value).trim()) next.set(key, String(value).trim());
    location.hash = `#/audit?${next}`;
  });
  form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT") form.requestSubmit(); });
  main.querySelectorAll("[data-export]").forEach((button) => button.addEventListener("click", () => exportAudit(button.dataset.export, params)));
}

function verifyHtml(verified) {
  if (verified.error) return `<p class="verify bad" id="verify" role="status">${t("audit.verifyFailed")}: ${esc(verified.error)}</p>`;
  if (verified.ok) return `<p class="verify ok" id="verify" role="status">✓ ${t("audit.intact", { n: verified.checked })}</p>`;
  const unexplained = (verified.unexplained || []).slice(0, 5).map((u) => `<li><a href="#/releases/${esc(u.release_id)}">${esc(u.release_id)}</a>: ${esc(u.reason)}</li>`).join("");
  const where = verified.first_broken_seq ? t("audit.brokenAt", { seq: verified.first_broken_seq }) : t("audit.broken");
  return `<div class="verify bad" id="verify" role="status"><strong>✗ ${esc(where)}</strong>: ${esc(verified.reason || "")}${unexplained ? `<ul>${unexplained}</ul>` : ""}</div>`;
}

// A download needs the token in a header, so the file comes through fetch and a blob link.
async function exportAudit(format, params) {
  const query = new URLSearchParams({ format });
  if (params.get("since")) query.set("since", dayStart(params.get("since")));
  if (params.get("until")) query.set("until", dayAfter(params.get("until")));
  const response = await fetch(`/api/v1/audit/export?${query}`, { headers: { Authorization: `Bearer ${state.token}`, "X-Shipdeck-Channel": "page" } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    toast(reasonText(body.error ? body.error.message : response.statusText));
    return;
  }
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = (response.headers.get("content-disposition") || "").match(/filename="([^"]+)"/)?.[1] || `shipdeck-audit.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ------------------------------------------------------------------ logs and diagnostics

function diagnosisHtml(diagnosis, only) {
  if (diagnosis.error) return `<p class="msg error" role="status"><span>${t("logs.unreachable")}: ${esc(diagnosis.error)}</span></p>`;
  const entries = Object.entries(diagnosis.services || {}).filter(([name]) => !only || only.includes(name));
  if (!entries.length) return `<p class="muted">${t("dash.noservices")}</p>`;
  return entries.map(([name, d]) => `<section class="panel diag" data-service="${esc(name)}">
      <h3>${esc(name)} ${badge(d.health)}</h3>
      <h4>${t("logs.events")}</h4>${d.events && d.events.length ? `<pre class="lines">${d.events.map(esc).join("\n")}</pre>` : `<p class="muted">${t("none")}</p>`}
      <h4>${t("logs.logs")}</h4>${d.logs && d.logs.length ? `<pre class="lines">${d.logs.map(esc).join("\n")}</pre>` : `<p class="muted">${t("none")}</p>`}
    </section>`).join("");
}

// A target's runtime view: live status, then each service's events and log lines.
export async function targetLogsPage(main, project, environment) {
  const [status, diagnosis, targets] = await Promise.all([
    api(`/api/v1/targets/${project}/${environment}`).catch((error) => ({ error: error.message })),
    api(`/api/v1/targets/${project}/${environment}/diagnose`).catch((error) => ({ error: error.message })),
    api(`/api/v1/targets?project=${encodeURIComponent(project)}`),
  ]);
  const frozen = frozenOf(null, () => targetFreezes(targets.items)({ project, environment }));
  const services = status.error ? "" : Object.entries(status.services).map(([name, s]) => `<li>${esc(name)} <code>${esc(s.image)}</code> ×${esc(s.replicas)} ${badge(s.health)}</li>`).join("");
  main.innerHTML = `<h1>${t("logs.title")}: ${esc(project)}/${esc(environment)}</h1>
    <p><a href="#/targets/${esc(project)}/${esc(environment)}">← ${esc(project)}/${esc(environment)}</a>${diagnosis.simulated ? ` <span class="sim">(${t("simulated")})</span>` : ""}
      ${status.active_release ? ` · ${t("logs.applying")} <a href="#/releases/${esc(status.active_release)}">${esc(status.active_release)}</a>` : ""}
      <button type="button" id="refresh-logs">${t("logs.refresh")}</button></p>
    ${frozen ? `<p>${frozenHtml(frozen)}</p>` : ""}
    ${services ? `<ul class="plain">${services}</ul>` : ""}
    <div class="diags">${diagnosisHtml(diagnosis)}</div>`;
  $("#refresh-logs").addEventListener("click", () => window.dispatchEvent(new HashChangeEvent("hashchange")));
}

// A release's outcome: why it ended, its last log lines, its events, then its services now.
export async function releaseLogsPage(main, id) {
  const [release, timeline] = await Promise.all([api(`/api/v1/releases/${id}`), api(`/api/v1/releases/${id}/timeline`)]);
  const diagnosis = await api(`/api/v1/targets/${release.project}/${release.environment}/diagnose`).catch((error) => ({ error: error.message }));
  const lines = timeline.entries.filter((e) => e.kind === "progress").slice(-30);
  const events = timeline.entries.filter((e) => e.kind === "audit");
  const failed = ["failed", "rollback_failed"].includes(release.lifecycle_state);
  main.innerHTML = `<h1>${t("logs.title")}: <a href="#/releases/${esc(release.id)}">${esc(release.id)}</a> ${badge(release.lifecycle_state)}</h1>
    <p>${esc(release.project)}/${esc(release.environment)} · ${t("requested")} ${esc(release.requested_by)} · ${when(release.updated_at)}</p>
    ${release.reason ? `<p class="${failed ? "msg error" : ""} outcome-reason" role="status"><span><strong>${t("reason")}:</strong> ${esc(reasonText(release.reason))}</span></p>` : ""}
    <h2>${t("card.lines")}</h2>
    ${lines.length ? `<pre class="lines" id="release-lines">${lines.map((e) => `<span class="${e.level === "error" ? "err" : ""}">${esc(clock(e.at))} ${esc(e.service || "")} ${esc(e.message)}</span>`).join("\n")}</pre>` : `<p class="muted">${t("none")}</p>`}
    <h2>${t("logs.releaseEvents")}</h2>
    <ol class="timeline">${events.map((e) => `<li><time datetime="${esc(e.at)}">${esc(clock(e.at))}</time> <strong>${esc(e.action)}</strong> ${esc(e.actor)} ${e.after_state ? `→ ${badge(e.after_state)}` : ""}${e.data && (e.data.reason || e.data.comment) ? ` <span class="muted">${esc(reasonText(e.data.reason || e.data.comment))}</span>` : ""}</li>`).join("")}</ol>
    <h2>${t("logs.servicesNow")}</h2>
    <p><a href="#/targets/${esc(release.project)}/${esc(release.environment)}/logs">${t("logs.target")} →</a></p>
    <div class="diags">${diagnosisHtml(diagnosis, Object.keys(release.changes || {}))}</div>`;
}
