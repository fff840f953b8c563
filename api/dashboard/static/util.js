// Small helpers shared by the dashboard's views: DOM building (text only, never HTML strings),
// the JSON API (session cookie + CSRF header), and number/time formatting.

const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

export class ApiError extends Error {}

export async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") options.headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    location.href = "/dashboard/login";
    throw new ApiError("your session has ended; log in again");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError((data.error && data.error.message) || `HTTP ${response.status}`);
  return data;
}

// h("td", {class: "num", onclick: fn}, "text", child, ...): attributes, listeners, text and nodes.
export function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "rect", "line", "polyline", "path", "text", "title", "circle"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function toast(message, bad = false) {
  const node = document.getElementById("toast");
  node.textContent = message;
  node.className = bad ? "toast bad" : "toast";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => node.classList.add("hidden"), bad ? 6000 : 3000);
}

export function bar(fraction, kind = "") {
  const fill = h("span");
  fill.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;  // CSSOM: allowed by the CSP
  return h("div", { class: `bar ${kind}` }, fill);
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

export function statusBadge(status) {
  return badge(String(status), status < 300 ? "ok" : status < 500 ? "warn" : "bad");
}

export function outcomeBadge(outcome) {
  const kinds = { ok: "ok", rejected: "warn", client_closed: "info", error: "bad", miner_error: "bad",
    timeout: "bad", cancelled: "" };
  return badge(outcome || "—", kinds[outcome] ?? "");
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

export function num(value) {
  if (value === null || value === undefined) return "—";
  return Math.abs(value) >= 100000 ? compact.format(value) : integer.format(value);
}

export function dec(value, digits = 2) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

export function pct(fraction) {
  return fraction === null || fraction === undefined ? "—" : `${(fraction * 100).toFixed(1)}%`;
}

export function ms(value) {
  if (value === null || value === undefined) return "—";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(value < 10 ? 1 : 0)} ms`;
}

export function when(value) {
  if (value === null || value === undefined) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return date.toLocaleString(undefined, { year: "numeric", month: "short", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit" });
}

export function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

export function short(hotkey) {
  return hotkey ? `${hotkey.slice(0, 6)}…${hotkey.slice(-4)}` : "—";
}

// <input type="datetime-local"> value (browser's local time) ⇄ ISO 8601 in UTC.
export function localToIso(value) {
  return value ? new Date(value).toISOString() : "";
}

export function isoToLocal(value) {
  if (!value) return "";
  const date = new Date(value);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:` +
    `${pad(date.getMinutes())}`;
}

export function kpi(label, value, sub, kind = "") {
  return h("div", { class: `kpi ${kind}` }, h("div", { class: "label" }, label), h("div", { class: "value" }, value),
    sub ? h("div", { class: "sub" }, sub) : null);
}

export function table(headers, rows, empty = "Nothing yet.") {
  const head = h("thead", {}, h("tr", {}, headers.map(([text, cls]) => h("th", { class: cls }, text))));
  const body = h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { class: "empty", colspan: headers.length },
    empty)));
  return h("div", { class: "table-wrap" }, h("table", {}, head, body));
}

// A confirmation in a <dialog> (not window.confirm, which blocks the page and tests).
export function confirmDialog(message, action = "Delete") {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm" }, h("p", {}, message),
      h("div", { class: "form-actions" },
        h("button", { class: "danger", id: "confirm-yes", onclick: () => { dialog.close(); resolve(true); } }, action),
        h("button", { onclick: () => { dialog.close(); resolve(false); } }, "Cancel")));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}
