// Request logs: filter by key, time, status and miner; page back in time; open one request to see
// every miner it queried (#/logs/<request id>).

import { api, badge, clear, h, isoToLocal, localToIso, ms, num, outcomeBadge, short, statusBadge, table, when }
  from "./util.js";

const PAGE = 50;

function filters(route, keys) {
  const p = route.params;
  const key = h("select", { id: "filter-key" }, h("option", { value: "" }, "any key"),
    keys.map((k) => h("option", { value: k.id, selected: p.get("key") === k.id }, `${k.name || "(no name)"} · ${k.id}`)));
  const since = h("input", { id: "filter-since", type: "datetime-local", value: isoToLocal(p.get("since")) });
  const until = h("input", { id: "filter-until", type: "datetime-local", value: isoToLocal(p.get("until")) });
  const status = h("input", { id: "filter-status", placeholder: "200, 429, 5xx…", value: p.get("status") || "" });
  const uid = h("input", { id: "filter-uid", type: "number", min: 0, placeholder: "any", value: p.get("uid") || "" });
  const hotkey = h("input", { id: "filter-hotkey", placeholder: "any", value: p.get("hotkey") || "" });
  const apply = (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (key.value) q.set("key", key.value);
    if (since.value) q.set("since", localToIso(since.value));
    if (until.value) q.set("until", localToIso(until.value));
    if (status.value.trim()) q.set("status", status.value.trim());
    if (uid.value !== "") q.set("uid", uid.value);
    if (hotkey.value.trim()) q.set("hotkey", hotkey.value.trim());
    const next = `#/logs?${q}`;
    if (location.hash === next) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = next;
  };
  const field = (label, input) => h("div", {}, h("label", { for: input.id }, label), input);
  return h("form", { class: "panel", id: "log-filters", onsubmit: apply },
    h("div", { class: "form-grid" }, field("Key", key), field("Since", since), field("Until", until),
      field("Status", status), field("Miner uid", uid), field("Miner hotkey", hotkey)),
    h("div", { class: "form-actions" }, h("button", { class: "primary", type: "submit", id: "apply-filters" }, "Apply"),
      h("button", { type: "button", onclick: () => { location.hash = "#/logs"; } }, "Reset"),
      h("button", { type: "button", id: "refresh-logs", onclick: apply }, "Refresh")));
}

function row(log, names) {
  const winner = log.miners.find((m) => m.winner);
  return h("tr", { class: "clickable", dataset: { logId: log.request_id },
    onclick: () => { location.hash = `#/logs/${encodeURIComponent(log.request_id)}`; } },
  h("td", { class: "nowrap" }, when(log.timestamp)), h("td", {}, names[log.key_id] || log.key_id),
  h("td", {}, statusBadge(log.status)), h("td", {}, outcomeBadge(log.outcome)),
  h("td", {}, (log.task || "—").replace("Task", "")), h("td", {}, log.model || "default"),
  h("td", {}, log.stream ? "stream" : ""), h("td", { class: "num" }, ms(log.latency_ms)),
  h("td", { class: "num" }, ms(log.first_byte_ms)), h("td", { class: "num" }, num(log.total_tokens)),
  h("td", { class: "num" }, winner ? `uid ${winner.uid}` : "—"), h("td", { class: "num" }, log.miners.length));
}

async function renderList(view, route) {
  const query = new URLSearchParams(route.params);
  query.set("limit", PAGE);
  const [{ keys }, { logs }] = await Promise.all([api("GET", "/dashboard/api/keys"),
    api("GET", `/dashboard/api/logs?${query}`)]);
  const names = Object.fromEntries(keys.map((k) => [k.id, k.name || k.id]));
  const older = logs.length === PAGE ? h("button", { id: "older-logs", onclick: () => {
    const next = new URLSearchParams(route.params);
    next.set("until", new Date(logs[logs.length - 1].timestamp * 1000).toISOString());
    location.hash = `#/logs?${next}`;
  } }, "Older →") : null;
  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Request logs"), h("span", { class: "spacer" }),
    h("span", { class: "muted small" }, "newest first · written in batches, within a second")),
  filters(route, keys),
  h("section", { class: "panel", id: "logs-table" }, table([["Time"], ["Key"], ["Status"], ["Outcome"], ["Task"],
    ["Model"], [""], ["Latency", "num"], ["First byte", "num"], ["Tokens", "num"], ["Answered by", "num"],
    ["Miners", "num"]], logs.map((log) => row(log, names)), "No request matches."),
  h("div", { class: "form-actions" }, older)));
}

async function renderOne(view, id) {
  const log = await api("GET", `/dashboard/api/logs/${encodeURIComponent(id)}`);
  const fields = [["Request id", h("span", { class: "mono" }, log.request_id)], ["Time", when(log.timestamp)],
    ["Key", h("a", { href: `#/keys/${log.key.id}` }, `${log.key.name || "(no name)"} · ${log.key.id}`)],
    ["Path", log.path], ["Status", statusBadge(log.status)], ["Outcome", outcomeBadge(log.outcome)],
    ["Task", log.task || "—"], ["Strategy", log.strategy || "—"], ["Model", log.model || "default"],
    ["Streamed", log.stream ? "yes" : "no"], ["Latency", ms(log.latency_ms)], ["First byte", ms(log.first_byte_ms)],
    ["Prompt tokens", num(log.prompt_tokens)], ["Completion tokens", num(log.completion_tokens)],
    ["Credits charged", num(log.charged)],
    ["Answered by", log.miner_uid === null ? "—" : `uid ${log.miner_uid} · ${short(log.miner_hotkey)}`]];
  const miners = log.miners.map((m, i) => h("tr", { dataset: { uid: m.uid } }, h("td", { class: "num" }, i + 1),
    h("td", { class: "num" }, m.uid), h("td", { class: "mono", title: m.hotkey }, short(m.hotkey)),
    h("td", {}, outcomeBadge(m.outcome)), h("td", {}, m.winner ? badge("answered", "ok") : ""),
    h("td", { class: "num" }, ms(m.latency_ms)), h("td", { class: "num" }, ms(m.first_chunk_ms)),
    h("td", { class: "num" }, num(m.completion_tokens)), h("td", { class: "muted small" }, m.error || "")));
  clear(view, h("div", { class: "page-head" }, h("a", { href: "#/logs" }, "← Request logs"),
    h("h1", {}, "Request"), statusBadge(log.status)),
  log.error ? h("div", { class: "banner bad" }, log.error) : null,
  h("section", { class: "panel" }, h("dl", { class: "fields" },
    fields.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))))),
  h("section", { class: "panel", id: "log-miners" }, h("h2", {}, `Miners queried (${log.miners.length})`),
    table([["#", "num"], ["uid", "num"], ["Hotkey"], ["Outcome"], [""], ["Latency", "num"], ["First chunk", "num"],
      ["Tokens", "num"], ["Error"]], miners, "No miner was queried (refused before routing).")));
}

export async function render(view, route) {
  return route.arg ? renderOne(view, route.arg) : renderList(view, route);
}
