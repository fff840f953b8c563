// Keys: create (the key is shown once), edit limits, credits, expiry and allow-lists, disable, delete;
// #/keys/<id> shows one key's usage. Everything goes through the same KeyAdmin as /api_management.

import { COLORS, timeChart } from "./charts.js";
import { api, badge, clear, confirmDialog, h, isoToLocal, kpi, localToIso, ms, num, pct, table, toast, when }
  from "./util.js";

const TASKS = ["InferenceTask", "WebQuestionAnsweringTask", "ProgrammingTask", "WebRetrievalTask",
  "MultiStepReasoningTask"];

function field(label, input, hint) {
  return h("div", {}, h("label", { for: input.id }, label), input, hint ? h("div", { class: "hint" }, hint) : null);
}

function taskChecks(prefix, selected) {
  return h("div", { class: "checks", id: `${prefix}-tasks` }, TASKS.map((task) => h("label", {},
    h("input", { type: "checkbox", value: task, checked: selected ? selected.includes(task) : false }),
    task.replace("Task", ""))));
}

function chosenTasks(container) {
  const chosen = [...container.querySelectorAll("input:checked")].map((c) => c.value);
  return chosen.length ? chosen : "any";
}

function status(key) {
  if (!key.enabled) return badge("disabled", "bad");
  if (key.expired) return badge("expired", "warn");
  return badge("active", "ok");
}

function credits(key) {
  return key.credits === null ? "unlimited" : `${num(key.credits)} left · ${num(key.credits_used)} used`;
}

function createForm(view) {
  const name = h("input", { id: "new-name", placeholder: "alice" });
  const creditsInput = h("input", { id: "new-credits", type: "number", min: 0, placeholder: "unlimited" });
  const limits = h("input", { id: "new-rate-limits", placeholder: "60 per minute and 1000 per day" });
  const expires = h("input", { id: "new-expires", type: "datetime-local" });
  const models = h("input", { id: "new-models", placeholder: "any (e.g. default,my-model)" });
  const tasks = taskChecks("new", null);
  const result = h("div", { id: "new-key-box", class: "hidden" });
  const form = h("form", { id: "create-key", onsubmit: async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim() };
    if (creditsInput.value !== "") body.credits = Number(creditsInput.value);
    if (limits.value.trim()) body.rate_limits = limits.value.trim();
    if (expires.value) body.expires_at = localToIso(expires.value);
    if (models.value.trim()) body.allowed_models = models.value.trim();
    const allowed = chosenTasks(tasks);
    if (allowed !== "any") body.allowed_tasks = allowed;
    try {
      const created = await api("POST", "/dashboard/api/keys", body);
      form.reset();
      const code = h("code", { id: "new-key" }, created.api_key);
      clear(result, h("div", { class: "banner ok" },
        h("strong", {}, `Key “${created.key.name || created.id}” created. `),
        "Copy it now: it is shown this once and cannot be read back (the store keeps only its hash)."),
      h("div", { class: "secret" }, code,
        h("button", { class: "small", type: "button", onclick: async () => {
          try { await navigator.clipboard.writeText(created.api_key); toast("Copied."); }
          catch { toast("Select the key and copy it by hand.", true); }
        } }, "Copy"),
        h("button", { class: "small", type: "button", id: "dismiss-key", onclick: () => result.classList.add("hidden") },
          "I have copied it")));
      result.classList.remove("hidden");
      await renderTable(view);
    } catch (error) {
      toast(error.message, true);
    }
  } },
  h("div", { class: "form-grid" },
    field("Name", name), field("Credits", creditsInput, "requests the key may make; empty: unlimited"),
    field("Rate limits", limits, "empty: the gateway's default"), field("Expires", expires, "empty: never"),
    field("Models", models, "empty: any")),
  h("div", { class: "form-grid" }, h("div", {}, h("label", {}, "Tasks (none ticked: any)"), tasks)),
  h("div", { class: "form-actions" }, h("button", { class: "primary", type: "submit", id: "create-button" },
    "Create key")));
  return h("section", { class: "panel" }, h("h2", {}, "Create a key"), form, result);
}

function editDialog(key, view) {
  const name = h("input", { id: "edit-name", value: key.name });
  const creditsInput = h("input", { id: "edit-credits", type: "number", min: 0,
    value: key.credits === null ? "" : key.credits, placeholder: "unlimited" });
  const add = h("input", { id: "edit-add-credits", type: "number", placeholder: "0" });
  const limits = h("input", { id: "edit-rate-limits", value: key.rate_limits.map((w) => w.text).join(" and "),
    placeholder: "none" });
  const expires = h("input", { id: "edit-expires", type: "datetime-local", value: isoToLocal(key.expires_at) });
  const models = h("input", { id: "edit-models", value: key.allowed_models ? key.allowed_models.join(",") : "",
    placeholder: "any" });
  const tasks = taskChecks("edit", key.allowed_tasks);
  const enabled = h("input", { id: "edit-enabled", type: "checkbox", checked: key.enabled });
  const dialog = h("dialog", { id: "edit-dialog" });
  const values = () => ({ name: name.value.trim(), enabled: enabled.checked,
    credits: creditsInput.value === "" ? "unlimited" : Number(creditsInput.value),
    rate_limits: limits.value.trim() || "none", expires_at: expires.value ? localToIso(expires.value) : "never",
    allowed_models: models.value.trim() || "any", allowed_tasks: chosenTasks(tasks) });
  const initial = values();
  const form = h("form", { onsubmit: async (event) => {
    event.preventDefault();
    // Only what changed: re-sending an unchanged balance would undo the credits spent meanwhile.
    const now = values();
    const body = Object.fromEntries(Object.entries(now).filter(([k, v]) => JSON.stringify(v) !==
      JSON.stringify(initial[k])));
    if (add.value) body.add_credits = Number(add.value);
    if (!Object.keys(body).length) { dialog.close(); return; }
    try {
      await api("PATCH", `/dashboard/api/keys/${encodeURIComponent(key.id)}`, body);
      dialog.close();
      toast("Key saved.");
      await renderTable(view);
    } catch (error) {
      toast(error.message, true);
    }
  } },
  h("h2", {}, `Edit ${key.name || key.id}`),
  h("div", { class: "form-grid" }, field("Name", name), field("Credits left", creditsInput, "empty: unlimited"),
    field("Add credits", add, "negative takes away"), field("Rate limits", limits, "e.g. 60 per minute; empty: none"),
    field("Expires", expires, "empty: never"), field("Models", models, "empty: any")),
  h("div", { class: "form-grid" }, h("div", {}, h("label", {}, "Tasks (none ticked: any)"), tasks),
    h("div", {}, h("label", { class: "checks" }, enabled, "Enabled"))),
  h("div", { class: "form-actions" }, h("button", { class: "primary", type: "submit", id: "save-key" }, "Save"),
    h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

async function renderTable(view) {
  const { keys } = await api("GET", "/dashboard/api/keys");
  const rows = keys.map((key) => h("tr", { dataset: { keyId: key.id } },
    h("td", {}, h("a", { href: `#/keys/${key.id}` }, key.name || "(no name)"), h("div", { class: "muted small mono" },
      key.id)),
    h("td", { class: "mono" }, key.key_hint), h("td", {}, status(key)),
    h("td", { class: "nowrap" }, credits(key)),
    h("td", {}, key.rate_limits.length ? key.rate_limits.map((w) => w.text).join(", ") : h("span", { class: "muted" },
      "default")),
    h("td", { class: "nowrap" }, key.expires_at ? when(key.expires_at) : h("span", { class: "muted" }, "never")),
    h("td", { class: "num" }, num(key.usage.requests)), h("td", { class: "num" }, num(key.usage.total_tokens)),
    h("td", { class: "nowrap" }, when(key.usage.last_used_at)),
    h("td", { class: "nowrap" },
      h("button", { class: "small", onclick: () => editDialog(key, view) }, "Edit"), " ",
      h("button", { class: "small toggle", onclick: async () => {
        try {
          await api("PATCH", `/dashboard/api/keys/${encodeURIComponent(key.id)}`, { enabled: !key.enabled });
          toast(key.enabled ? "Key disabled." : "Key enabled.");
          await renderTable(view);
        } catch (error) { toast(error.message, true); }
      } }, key.enabled ? "Disable" : "Enable"), " ",
      h("button", { class: "small danger delete", onclick: async () => {
        if (!(await confirmDialog(`Delete key “${key.name || key.id}”? Requests with it are refused at once.`))) return;
        try {
          await api("DELETE", `/dashboard/api/keys/${encodeURIComponent(key.id)}`);
          toast("Key deleted.");
          await renderTable(view);
        } catch (error) { toast(error.message, true); }
      } }, "Delete"))));
  const holder = view.querySelector("#keys-table");
  clear(holder, h("h2", {}, `Keys (${keys.length})`), table([["Name"], ["Key"], ["Status"], ["Credits"],
    ["Rate limits"], ["Expires"], ["Requests", "num"], ["Tokens", "num"], ["Last used"], [""]], rows,
  "No keys yet: create one above."));
}

async function renderKey(view, id) {
  const [usage, traffic] = await Promise.all([
    api("GET", `/dashboard/api/keys/${encodeURIComponent(id)}/usage?days=30`),
    api("GET", `/dashboard/api/overview?range=day&key=${encodeURIComponent(id)}`)]);
  const key = usage.key;
  const times = traffic.series.map((s) => s.t);
  const daily = [...usage.daily].reverse();
  clear(view,
    h("div", { class: "page-head" }, h("a", { href: "#/keys" }, "← Keys"), h("h1", {}, key.name || key.id), status(key),
      h("span", { class: "spacer" }), h("a", { class: "button", href: `#/logs?key=${encodeURIComponent(key.id)}` },
        "Request logs for this key")),
    h("div", { class: "kpis" },
      kpi("Requests", num(key.usage.requests), "since the key was created"),
      kpi("Tokens", num(key.usage.total_tokens), `${num(key.usage.prompt_tokens)} prompt · ` +
        `${num(key.usage.completion_tokens)} completion`),
      kpi("Credits", key.credits === null ? "unlimited" : num(key.credits), `${num(key.usage.credits_charged)} charged`),
      kpi("Last 24 h", num(traffic.totals.requests), `success ${pct(traffic.totals.success_rate)} · mean ` +
        `${ms(traffic.totals.mean_latency_ms)}`)),
    h("section", { class: "panel" }, h("h2", {}, "Requests, last 24 hours (15-minute slots)"),
      timeChart({ times, kind: "bar", stacked: true, format: (v) => num(v), width: 1240, height: 220, integer: true,
        series: [
        { name: "ok", color: COLORS.ok, values: traffic.series.map((s) => s.ok + s.client_closed) },
        { name: "rejected", color: COLORS.warn, values: traffic.series.map((s) => s.rejected) },
        { name: "failed", color: COLORS.bad, values: traffic.series.map((s) => s.errors) }] })),
    h("section", { class: "panel" }, h("h2", {}, "Per day (UTC), last 30 days"),
      table([["Day"], ["Requests", "num"], ["Prompt tokens", "num"], ["Completion tokens", "num"],
        ["Credits charged", "num"]], daily.map((d) => h("tr", {}, h("td", {}, d.day),
        h("td", { class: "num" }, num(d.requests)), h("td", { class: "num" }, num(d.prompt_tokens)),
        h("td", { class: "num" }, num(d.completion_tokens)), h("td", { class: "num" }, num(d.charged)))),
      "No usage yet.")),
    h("section", { class: "panel" }, h("h2", {}, "Settings"), h("dl", { class: "fields" },
      ...[["Id", key.id], ["Key", key.key_hint], ["Created", when(key.created_at)], ["Updated", when(key.updated_at)],
        ["Expires", key.expires_at ? when(key.expires_at) : "never"], ["Credits", credits(key)],
        ["Rate limits", key.rate_limits.map((w) => w.text).join(", ") || "the gateway's default"],
        ["Token quota", key.token_quota === null ? "the gateway's default" :
          `${num(key.token_quota)} tokens · ${num(Math.max(0, key.token_quota - key.usage.total_tokens))} left`],
        ["Tokens per minute", key.tpm_limit === null ? "the gateway's default" : num(key.tpm_limit)],
        ["Tasks", key.allowed_tasks ? key.allowed_tasks.join(", ") : "any"],
        ["Models", key.allowed_models ? key.allowed_models.join(", ") : "any"],
        ["Last used", when(key.usage.last_used_at)]].map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))))));
}

export async function render(view, route) {
  if (route.arg) return renderKey(view, route.arg);
  clear(view, h("div", { class: "page-head" }, h("h1", {}, "Keys")), createForm(view),
    h("section", { class: "panel", id: "keys-table" }, h("p", { class: "muted" }, "Loading…")));
  await renderTable(view);
}
