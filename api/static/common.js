// Shared state and helpers of the console's pages.
import { translator } from "/static/i18n.js";

export const state = {
  token: sessionStorage.getItem("shipdeck.token"),
  lang: localStorage.getItem("shipdeck.lang") || (navigator.language.startsWith("zh") ? "zh" : "en"),
  me: null, ws: null, sessionId: sessionStorage.getItem("shipdeck.session"),
  cards: new Map(), chat: [], retry: 0, selected: new Set(), armed: null,
  // Messages typed while the socket (re)connects: sent once its session frame arrived.
  unsent: [], ready: false,
  // What live events told us about each release a card is about: state, reason, log lines.
  releases: new Map(), inboxCount: 0,
};
export const $ = (sel, root = document) => root.querySelector(sel);
export const t = (key, values) => translator(state.lang).t(key, values);
export const stateName = (s) => translator(state.lang).stateName(s);
export const reasonText = (s) => translator(state.lang).reason(s);
export const ago = (iso) => translator(state.lang).ago(iso);
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
export const badge = (s) => `<span class="state ${esc(s)}" data-state="${esc(s)}">${esc(stateName(s))}</span>`;
export const isPhone = () => window.matchMedia("(max-width: 760px)").matches;
export const when = (iso) => `<time datetime="${esc(iso)}" title="${esc(new Date(iso).toLocaleString(locale()))}">${esc(ago(iso))}</time>`;

export function toast(text) {
  const box = $("#toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

export async function api(path, options = {}) {
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

export const TERMINAL = ["applied", "failed", "rejected", "cancelled", "expired", "rolled_back", "rollback_failed"];
const ENV_ORDER = ["dev", "development", "test", "qa", "staging", "stage", "preprod", "prod", "production"];
export function envSort(a, b) {
  const ia = ENV_ORDER.indexOf(a), ib = ENV_ORDER.indexOf(b);
  return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
}

// Date inputs give days (YYYY-MM-DD); the server takes instants: a day starts and ends in UTC.
export const dayStart = (day) => `${day}T00:00:00Z`;
export function dayAfter(day) {
  const next = new Date(`${day}T00:00:00Z`);
  next.setUTCDate(next.getUTCDate() + 1);
  return next.toISOString();
}

// Clock times and dates in the console's language, not the browser's.
export const locale = () => (state.lang === "zh" ? "zh-CN" : "en");
export const clock = (iso) => new Date(iso).toLocaleTimeString(locale());
