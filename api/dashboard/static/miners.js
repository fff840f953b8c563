// Miners: the directory this worker routes by, each miner's recent success rate and latency (every
// worker's requests, last hour), and the validator's scores and last weight set.

import { ago, api, badge, bar, clear, dec, h, ms, num, pct, short, table, when } from "./util.js";

export const live = true;

function withBar(text, fraction, kind = "") {
  return h("div", { class: "with-bar" }, text, fraction === null || fraction === undefined ? null : bar(fraction, kind));
}

function availability(miner) {
  if (miner.validator_permit && !miner.address) return badge("validator", "info");
  if (!miner.address) return badge("not serving");
  if (!miner.available) return badge("unavailable", "bad");
  return h("span", { title: `tasks: ${miner.tasks.join(", ")}\nmodels: ${miner.models.join(", ")}` },
    badge("available", "ok"));
}

function validatorPanel(data) {
  const v = data.validator;
  if (!v.reachable) {
    return h("div", { class: "banner bad", id: "validator-unreachable" },
      h("strong", {}, "Validator unreachable. "), "Scores and weights cannot be shown now; the directory below is the ",
      "last good copy. ", h("span", { class: "small" }, v.error || ""));
  }
  const last = v.last_weight_set;
  const weights = last ? Object.entries(last.weights).sort((a, b) => b[1] - a[1]) : [];
  return h("section", { class: "panel", id: "weights" }, h("h2", {}, "Validator: last weight set"),
    last ? h("div", {},
      h("dl", { class: "fields" }, [["When", `${when(last.at)} (${ago(Date.now() / 1000 - last.at)})`],
        ["Result", last.success ? badge("set", "ok") : badge(last.rate_limited ? "rate limited" : "failed", "bad")],
        ["Message", last.message || "—"], ["Weight steps", num(v.weight_steps)], ["uids", num(weights.length)]]
        .map(([k, val]) => h("div", {}, h("dt", {}, k), h("dd", {}, val)))),
      table([["uid", "num"], ["Weight", "num"], [""]], weights.map(([uid, w]) => h("tr", {},
        h("td", { class: "num" }, uid), h("td", { class: "num" }, dec(w, 4)), h("td", {}, bar(w / weights[0][1]))))))
      : h("p", { class: "muted" }, `No weights set yet (${num(v.weight_steps || 0)} steps).`));
}

export async function render(view) {
  const data = await api("GET", "/dashboard/api/miners");
  const d = data.directory;
  const maxIncentive = Math.max(1e-9, ...data.miners.map((m) => m.incentive));
  const rows = data.miners.map((m) => h("tr", { dataset: { uid: m.uid } },
    h("td", { class: "num" }, m.uid), h("td", { class: "mono nowrap", title: m.hotkey }, short(m.hotkey)),
    h("td", { class: "mono nowrap" }, m.address || "—"), h("td", {}, availability(m)),
    h("td", { class: "num" }, withBar(dec(m.incentive, 4), m.incentive / maxIncentive)),
    h("td", { class: "num" }, num(m.stake)),
    h("td", { class: "num" }, num(m.recent.calls)),
    h("td", { class: "num" }, withBar(pct(m.recent.success_rate), m.recent.success_rate, "ok")),
    h("td", { class: "num" }, ms(m.recent.mean_latency_ms)), h("td", { class: "num" }, ms(m.recent.mean_first_chunk_ms)),
    h("td", { class: "num" }, num(m.recent.wins)),
    h("td", { class: "num" }, m.score === null ? "—" : dec(m.score, 3), m.probation_until ? " " : null,
      m.probation_until ? h("span", { class: "badge bad", title: "Caught cheating: the validator holds its score " +
        `at or below 0 until ${new Date(m.probation_until * 1000).toLocaleString()}` }, "probation") : null),
    h("td", { class: "num" }, m.weight === null ? "—" : withBar(dec(m.weight, 3), m.weight)),
    h("td", { class: "num" }, m.rewards === null ? "—" : num(m.rewards))));
  const directory = d ? h("div", { class: d.validator_reachable ? "banner info" : "banner bad", id: "directory-state" },
    `Directory of subnet ${d.netuid} at block ${num(d.block)}, refreshed ${ago(d.age_seconds)}` +
    (d.validator_reachable ? " from the validator." : " — the validator did not answer the last refresh."))
    : h("div", { class: "banner bad" }, "No miner directory yet: the validator has never answered this worker.");
  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Miners"), h("span", { class: "spacer" }),
    h("span", { class: "muted small" }, `Updated ${new Date().toLocaleTimeString()} · recent = last ` +
      `${Math.round(data.window_seconds / 60)} min of requests through the gateway`)),
  directory, data.validator.reachable ? null : validatorPanel(data),
  h("section", { class: "panel", id: "miners-table" }, h("h2", {}, `Neurons (${data.miners.length})`),
    table([["uid", "num"], ["Hotkey"], ["Address"], ["Availability"], ["Incentive", "num"], ["Stake", "num"],
      ["Calls", "num"], ["Success", "num"], ["Latency", "num"], ["First chunk", "num"], ["Answered", "num"],
      ["Score", "num"], ["Weight", "num"], ["Rewards", "num"]], rows, "The directory is empty."),
    h("p", { class: "muted small" }, "Calls, success, latency and answered: this gateway's requests over the window ",
      "(cancelled calls, whose race another miner won, are not judged). Score, weight and rewards: the validator's ",
      "view, from synthetic and organic traffic; a miner caught cheating is on probation, its score held at or ",
      "below 0, for some hours after its last catch.")),
  data.validator.reachable ? validatorPanel(data) : null);
}
