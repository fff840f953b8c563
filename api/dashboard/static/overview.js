// Overview: requests per minute, success rate, p50/p99 latency, tokens and the busiest keys,
// over the last hour (1-minute slots) or day (15-minute slots), from the store's roll-ups.

import { COLORS, timeChart } from "./charts.js";
import { api, bar, clear, dec, h, kpi, ms, num, pct, table } from "./util.js";

export const live = true;

export async function render(view, route) {
  const range = route.params.get("range") === "day" ? "day" : "hour";
  const data = await api("GET", `/dashboard/api/overview?range=${range}`);
  const totals = data.totals;
  const times = data.series.map((s) => s.t);
  const perMinute = data.slot_seconds / 60;
  const values = (name, scale = 1) => data.series.map((s) => (s[name] === null ? null : s[name] / scale));

  const toggle = h("div", { class: "segmented" }, ["hour", "day"].map((name) =>
    h("button", { class: name === range ? "on" : "", id: `range-${name}`,
      onclick: () => { location.hash = `#/overview?range=${name}`; } }, name === "hour" ? "Last hour" : "Last day")));
  const served = totals.requests - totals.rejected;
  const head = h("div", { class: "page-head" }, h("h1", {}, "Overview"), toggle, h("span", { class: "spacer" }),
    h("span", { class: "muted small" }, `Updated ${new Date().toLocaleTimeString()} · every worker, requests with a key`));

  const kpis = h("div", { class: "kpis" },
    kpi("Requests / min", dec(totals.recent_requests_per_minute, 1), `last 5 min · ${num(totals.requests)} in the ` +
      `last ${range}`),
    kpi("Success rate", pct(totals.success_rate), `${num(served)} served, ${num(totals.errors)} failed`,
      totals.success_rate === null ? "" : totals.success_rate >= 0.99 ? "good" : totals.success_rate >= 0.9 ? "warn"
        : "bad"),
    kpi("p50 latency", ms(totals.p50_ms), "to the last byte"),
    kpi("p99 latency", ms(totals.p99_ms), `mean ${ms(totals.mean_latency_ms)}`),
    kpi("Tokens", num(totals.tokens), `${num(totals.prompt_tokens)} prompt · ${num(totals.completion_tokens)} completion`),
    kpi("Rejected (4xx)", num(totals.rejected), "keys, limits, credits, bodies", totals.rejected ? "warn" : ""),
  );

  const charts = h("div", { class: "grid two" },
    h("section", { class: "panel" }, h("h2", {}, "Requests per minute"),
      timeChart({ times, kind: "bar", stacked: true, format: (v) => dec(v, v < 10 ? 1 : 0), series: [
        { name: "ok", color: COLORS.ok, values: values("ok", perMinute) },
        { name: "client closed", color: COLORS.teal, values: values("client_closed", perMinute) },
        { name: "rejected (4xx)", color: COLORS.warn, values: values("rejected", perMinute) },
        { name: "failed (5xx)", color: COLORS.bad, values: values("errors", perMinute) }] })),
    h("section", { class: "panel" }, h("h2", {}, "Success rate"),
      timeChart({ times, max: 1, format: (v) => `${Math.round(v * 100)}%`,
        series: [{ name: "success rate", color: COLORS.ok, values: values("success_rate") }] })),
    h("section", { class: "panel" }, h("h2", {}, "Latency"),
      timeChart({ times, format: (v) => ms(v), series: [
        { name: "p50", color: COLORS.blue, values: values("p50_ms") },
        { name: "p99", color: COLORS.violet, values: values("p99_ms") }] })),
    h("section", { class: "panel" }, h("h2", {}, "Tokens"),
      timeChart({ times, kind: "bar", stacked: true, format: (v) => num(v), integer: true, series: [
        { name: "prompt", color: COLORS.grey, values: values("prompt_tokens") },
        { name: "completion", color: COLORS.blue, values: values("completion_tokens") }] })),
  );

  const busiest = Math.max(1, ...data.top_keys.map((k) => k.requests));
  const top = h("section", { class: "panel", id: "top-keys" }, h("h2", {}, `Top keys, last ${range}`),
    table([["Key"], ["Hint"], ["Requests", "num"], [""], ["Tokens", "num"], ["Failed", "num"], ["Rejected", "num"]],
      data.top_keys.map((k) => h("tr", { class: "clickable", onclick: () => { location.hash = `#/keys/${k.key_id}`; } },
        h("td", {}, k.name || k.key_id), h("td", { class: "mono" }, k.key_hint || "—"),
        h("td", { class: "num" }, num(k.requests)), h("td", {}, bar(k.requests / busiest)),
        h("td", { class: "num" }, num(k.tokens)), h("td", { class: "num" }, num(k.errors)),
        h("td", { class: "num" }, num(k.rejected)))),
      "No requests in this period."));
  const routing = data.routing || {};
  const bands = [["0.9-1", "≥ 90% of the best"], ["0.5-0.9", "50–90%"], ["0-0.5", "below 50%"], ["0", "unrated / 0"]];
  const quality = h("section", { class: "panel", id: "routing" },
    h("h2", {}, "Whose answers clients got (validator score of the serving miner, this port since start)"),
    h("div", { class: "kpis" },
      kpi("Mean validator score", routing.mean_score == null ? "—" : dec(routing.mean_score, 3),
        `${num(routing.answers || 0)} answers`),
      kpi("Quality vs best", pct(routing.quality_vs_best ?? null), "served score / best available score"),
      ...bands.map(([band, label]) => kpi(`Band ${band}`, pct((routing.share_by_band || {})[band] ?? null),
        label, band === "0" && (routing.share_by_band || {})[band] ? "warn" : ""))));
  clear(view, head, kpis, quality, charts, h("div", { class: "grid" }, top));
}
