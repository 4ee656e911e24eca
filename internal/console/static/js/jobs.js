// Jobs and batches: every key's jobs, filtered by key, status, model or batch, newest
// first; one job opened with its answer or error; the batches, each leading to its jobs.
import { api, query } from "./api.js";
import { banner, clear, field, fmt, h, input, modal, pageHead, pill, select, table } from "./ui.js";

const statuses = [["", "Any status"], ["queued", "Queued"], ["running", "Running"], ["succeeded", "Succeeded"],
  ["failed", "Failed"], ["canceled", "Canceled"]];

const statusKind = { succeeded: "ok", completed: "ok", failed: "bad", expired: "bad", canceled: "warn", cancelled: "warn",
  cancelling: "warn", running: "info", in_progress: "info", finalizing: "info", validating: "", queued: "" };

function statusPill(s) {
  return pill(s, statusKind[s] ?? "");
}

function tokensOf(j) {
  return j.usage ? fmt.int(j.usage.prompt_tokens) + " → " + fmt.int(j.usage.completion_tokens) : "—";
}

function pretty(v) {
  try {
    return JSON.stringify(typeof v === "string" ? JSON.parse(v) : v, null, 2);
  } catch {
    return String(v);
  }
}

// openJob shows one job in a dialog.
async function openJob(id, keyName, channelName) {
  let j;
  try {
    j = await api("GET", "/jobs/" + encodeURIComponent(id));
  } catch (e) {
    banner(e.message);
    return;
  }
  const row = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
  const body = [
    h("dl", { class: "kv", id: "job-detail" },
      row("Job", h("code", {}, j.id)),
      row("Status", statusPill(j.status)),
      row("Key", [keyName(j.key_id), " ", h("code", { class: "muted" }, j.key_id)]),
      row("Model", h("code", {}, j.model)),
      row("Endpoint", h("code", {}, j.endpoint)),
      row("Mode", j.batch_id ? "batch " + j.batch_id + (j.custom_id ? " · " + j.custom_id : "") : "request"),
      row("Channel", j.channel_id ? [channelName(j.channel_id), " ", h("code", { class: "muted" }, j.channel_id)] : "—"),
      row("Deliveries", String(j.attempts)),
      row("Tokens (prompt → completion)", tokensOf(j)),
      row("Cost", fmt.money(j.cost_usd)),
      row("Created", fmt.time(j.created_at)),
      row("Started", fmt.time(j.started_at)),
      row("Finished", fmt.time(j.finished_at) + (j.finished_at ? " (" + fmt.duration(j.created_at, j.finished_at) + ")" : "")),
      Object.keys(j.metadata || {}).length ? row("Metadata", h("code", {}, pretty(j.metadata))) : null),
    j.error ? [h("h3", {}, "Error"), h("pre", { class: "json" }, pretty(j.error))] : null,
    j.response ? h("details", {}, h("summary", {}, "Response (status " + j.response.status_code + ")"),
      h("pre", { class: "json" }, pretty(j.response.body))) : null,
  ];
  const close = modal("Job details", body, [h("button", { type: "button", class: "btn", onclick: () => close() }, "Close")], true);
}

export async function jobsPage(params) {
  const [keys, channels] = await Promise.all([api("GET", "/keys"), api("GET", "/channels")]);
  const names = Object.fromEntries(keys.data.map((k) => [k.id, k.name || k.key_hint]));
  const keyName = (id) => names[id] || id;
  const chNames = Object.fromEntries(channels.data.map((c) => [c.id, c.name]));
  const channelName = (id) => chNames[id] || "(deleted channel)";
  const f = {
    key: select("key_id", [["", "All keys"], ...keys.data.map((k) => [k.id, (k.name || k.id) + " (" + k.key_hint + ")"])], params.get("key_id")),
    status: select("status", statuses, params.get("status")),
    model: input("model", params.get("model") || "", { placeholder: "any model", list: "model-names" }),
    batch: input("batch_id", params.get("batch_id") || "", { placeholder: "any batch" }),
  };
  const models = h("datalist", { id: "model-names" });
  api("GET", "/prices").then((p) => p.data.forEach((m) => models.append(h("option", { value: m.model })))).catch(() => {});
  const jobsBox = h("div", { id: "jobs-table" });
  const more = h("button", { type: "button", class: "btn", hidden: true }, "Load more");
  const count = h("span", { class: "muted small", id: "jobs-count" });
  const batchesBox = h("div", { id: "batches-table" });
  const filters = h("form", { class: "filters", id: "job-filters", method: "post" },
    field("Key", f.key), field("Status", f.status), field("Model", f.model), field("Batch", f.batch), models,
    h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
    h("button", { type: "button", class: "btn", onclick: () => { filters.reset(); f.model.value = ""; f.batch.value = ""; apply(); } }, "Clear"));
  const page = h("div", {},
    pageHead("Jobs & batches", "Every request Sluice ran, sync and async, with what it cost. Open a job to see its answer or error."),
    h("div", { class: "panel flush" }, filters, jobsBox, h("div", { class: "panel-head" }, count, more)),
    h("div", { class: "panel flush" }, h("div", { class: "panel-head" }, h("h2", {}, "Batches")), batchesBox));

  let rows = [];
  let cursor = "";
  const cols = [
    { label: "Job", cell: (j) => [h("code", {}, j.id), h("span", { class: "cell-sub" }, j.batch_id ? "batch line " + (j.custom_id || "") : j.endpoint)] },
    { label: "Created", cell: (j) => [fmt.ago(j.created_at), h("span", { class: "cell-sub" }, fmt.time(j.created_at))] },
    { label: "Key", cell: (j) => keyName(j.key_id) },
    { label: "Model", cell: (j) => h("code", {}, j.model) },
    { label: "Status", cell: (j) => statusPill(j.status) },
    { label: "Tokens", num: true, cell: tokensOf },
    { label: "Cost", num: true, cell: (j) => fmt.money(j.cost_usd) },
    { label: "Took", num: true, cell: (j) => fmt.duration(j.created_at, j.finished_at) },
  ];
  const filterQuery = () => ({ key_id: f.key.value, status: f.status.value, model: f.model.value.trim(), batch_id: f.batch.value.trim() });
  // Each load is numbered: a slower answer to an earlier filter must not replace a later one.
  let loads = 0;
  const loadJobs = async (append) => {
    const n = ++loads;
    const page = await api("GET", "/jobs" + query({ ...filterQuery(), limit: 50, after: append ? cursor : "" }));
    if (n !== loads) return;
    rows = append ? rows.concat(page.data) : page.data;
    cursor = page.last_id || "";
    more.hidden = !page.has_more;
    clear(jobsBox, table(cols, rows, "No jobs match these filters.", (j) => openJob(j.id, keyName, channelName)));
    count.textContent = rows.length + " job" + (rows.length === 1 ? "" : "s") + (page.has_more ? " shown" : "");
  };
  const loadBatches = async () => {
    const bs = await api("GET", "/batches" + query({ key_id: f.key.value, limit: 50 }));
    clear(batchesBox, table([
      { label: "Batch", cell: (b) => [h("code", {}, b.id), h("span", { class: "cell-sub" }, b.kind + " · " + b.endpoint)] },
      { label: "Key", cell: (b) => keyName(b.key_id) },
      { label: "Status", cell: (b) => statusPill(b.status) },
      { label: "Lines", num: true, cell: (b) => {
        const c = b.request_counts;
        return fmt.int(c.completed) + " ok · " + fmt.int(c.failed) + " failed / " + fmt.int(c.total);
      } },
      { label: "Created", cell: (b) => fmt.time(b.created_at) },
      { label: "", cell: (b) => h("button", { type: "button", class: "btn btn-sm", onclick: () => { f.batch.value = b.id; apply(); } }, "Show jobs") },
    ], bs.data, "No batches yet. Batches submitted to /v1/batches or /v1/messages/batches appear here."));
  };
  const apply = () => {
    const q = new URLSearchParams(Object.entries(filterQuery()).filter(([, v]) => v));
    history.replaceState(null, "", "#/jobs" + (q.toString() ? "?" + q : ""));
    Promise.all([loadJobs(false), loadBatches()]).catch((e) => banner(e.message));
  };
  filters.addEventListener("submit", (ev) => { ev.preventDefault(); apply(); });
  f.key.addEventListener("change", apply);
  f.status.addEventListener("change", apply);
  more.addEventListener("click", () => loadJobs(true).catch((e) => banner(e.message)));
  await Promise.all([loadJobs(false), loadBatches()]);
  return page;
}
