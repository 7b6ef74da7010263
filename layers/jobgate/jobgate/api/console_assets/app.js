// The jobgate console: a hash-routed page over the API. #/jobs, #/jobs/{id}, #/new, #/new/{stage}/{command},
// #/uploads, #/pipelines, #/pipelines/{id}, #/maps, #/maps/{id}. The API key is asked for first, kept in sessionStorage.

import { api, apiKey, ApiError, forgetKey, rememberKey, TERMINAL, upload } from "./api.js";
import { announce, bytes, el, errorBox, facts, statusBadge, when } from "./dom.js";
import { collectArgs, contractFields } from "./form.js";
import { renderOutputs } from "./outputs.js";
import { follow } from "./watch.js";

const STATUSES = ["blocked", "queued", "running", "succeeded", "failed", "timed_out", "cancelled"];
const PAGE_SIZE = 20;
const main = document.getElementById("main");
const nav = document.getElementById("nav");
let leave = () => {}; // what the page shown must stop (a WebSocket, a poll) when another is shown
let navigation = 0; // which route is current: a page whose answers arrive after the next route draws nothing

// Awaits an API answer for the page of route `token`; throws Stale once another route is current.
class Stale extends Error {}
async function still(token, promise) {
  const value = await promise;
  if (token !== navigation) throw new Stale();
  return value;
}

function show(title, ...nodes) {
  leave();
  leave = () => {};
  main.replaceChildren(el("h1", { text: title }), ...nodes);
  document.title = `${title} · jobgate console`;
  // A new route moves focus to its content, as a page load would reset it; the first page leaves focus
  // where the browser put it, so the first Tab still reaches the skip link.
  if (navigation > 1) main.focus();
}

function params(query) {
  return new URLSearchParams(query || "");
}

// -- the key ---------------------------------------------------------------------------------------

function keyPage(message) {
  nav.hidden = true;
  const input = el("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true, "aria-describedby": "api-key-hint" });
  const status = el("div", { "aria-live": "polite" });
  const form = el(
    "form",
    { class: "fields", "aria-labelledby": "key-title" },
    el("div", { class: "field" },
      el("label", { for: "api-key", text: "API key" }),
      el("span", { class: "hint", id: "api-key-hint", text: "Sent as X-API-Key; kept in this tab only (sessionStorage) until you close it or forget it." }),
      input),
    status,
    el("div", {}, el("button", { type: "submit", class: "primary", text: "Open the console" })),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    try {
      await api("/v1/jobs?limit=1", { key });
      rememberKey(key);
      announce("Signed in.");
      route();
    } catch (error) {
      status.replaceChildren(errorBox(error instanceof ApiError && error.status === 401 ? new Error("That key is not valid.") : error));
      input.focus();
    }
  });
  show("jobgate console", message ? errorBox(message) : "", el("p", { id: "key-title", text: "Enter an API key to see and run its jobs." }), form);
  input.focus();
}

// -- jobs ------------------------------------------------------------------------------------------

async function jobsPage(query, token) {
  const q = params(query);
  const status = q.get("status") || "";
  const cursor = q.get("cursor") || "";
  const back = q.getAll("back");
  const select = el("select", { id: "status-filter", name: "status" },
    el("option", { value: "", text: "Any status" }),
    STATUSES.map((s) => el("option", { value: s, text: s.replace("_", " "), selected: s === status })));
  const filter = el("form", { class: "toolbar", role: "search", "aria-label": "Filter jobs" },
    el("div", { class: "field" }, el("label", { for: "status-filter", text: "Status" }), select),
    el("button", { type: "submit", text: "Show" }));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = select.value ? `#/jobs?status=${select.value}` : "#/jobs";
  });
  show("Jobs", filter, el("p", { text: "Loading…", class: "muted" }));
  const search = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (status) search.set("status", status);
  if (cursor) search.set("cursor", cursor);
  let page;
  try {
    page = await still(token, api(`/v1/jobs?${search}`));
  } catch (error) {
    return failed(token, error, filter);
  }
  const rows = page.items.map((job) =>
    el("tr", {},
      el("td", {}, el("a", { href: `#/jobs/${job.job_id}` }, el("code", { text: job.job_id }))),
      el("td", { text: `${job.stage} ${job.command}` }),
      el("td", {}, statusBadge(job.status)),
      el("td", { text: `${Math.round(job.progress * 100)} %` }),
      el("td", { text: when(job.created_at) })));
  const table = el("table", {},
    el("caption", { text: `${status ? status.replace("_", " ") + " jobs" : "Jobs"}, newest first${back.length ? `, page ${back.length + 1}` : ""}` }),
    el("thead", {}, el("tr", {}, ["Job", "Command", "Status", "Progress", "Created"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows));
  const pager = el("nav", { class: "pager", "aria-label": "Pages of jobs" });
  const base = status ? `status=${status}&` : "";
  if (back.length) {
    const previous = new URLSearchParams(base);
    back.slice(0, -1).forEach((c) => previous.append("back", c));
    if (back[back.length - 1]) previous.set("cursor", back[back.length - 1]);
    pager.append(el("a", { href: `#/jobs?${previous}`, text: "Previous page" }));
  }
  if (page.next_cursor) {
    const next = new URLSearchParams(base);
    [...back, cursor].forEach((c) => next.append("back", c));
    next.set("cursor", page.next_cursor);
    pager.append(el("a", { href: `#/jobs?${next}`, text: "Next page" }));
  }
  const body = page.items.length ? [table, pager] : [el("p", { text: "No jobs here yet. " }, el("a", { href: "#/new", text: "Run one." }))];
  show("Jobs", filter, ...body);
  announce(`${page.items.length} jobs shown.`);
}

function failed(token, error, ...before) {
  if (error instanceof Stale || token !== navigation) return undefined;
  if (error instanceof ApiError && error.status === 401) {
    forgetKey();
    return keyPage("The API key was refused; enter it again.");
  }
  main.replaceChildren(main.firstChild, ...before, errorBox(error));
}

async function jobPage(jobId, token) {
  show(`Job ${jobId}`, el("p", { text: "Loading…", class: "muted" }));
  let job;
  try {
    job = await still(token, api(`/v1/jobs/${encodeURIComponent(jobId)}`));
  } catch (error) {
    return failed(token, error);
  }
  const status = el("span", { id: "job-status", role: "status" }, statusBadge(job.status));
  const progress = el("progress", { id: "job-progress", max: "1", value: String(job.progress) });
  const percent = el("span", { id: "job-progress-text", text: `${Math.round(job.progress * 100)} %` });
  const transport = el("span", { id: "job-transport", text: TERMINAL.has(job.status) ? "ended" : "connecting…" });
  const exit = el("span", { id: "job-exit", text: job.exit_code ?? "—" });
  const reason = el("span", { id: "job-reason", text: job.finish_reason || "—" });
  const error = el("div", { id: "job-error" });
  const streams = {
    stderr: el("pre", { id: "log-stderr", role: "log", tabindex: "0", "aria-labelledby": "stderr-title" }),
    stdout: el("pre", { id: "log-stdout", role: "log", tabindex: "0", "aria-labelledby": "stdout-title" }),
  };
  const outputs = el("div", { id: "job-outputs" });
  let followedOver = null;
  const cancel = el("button", { type: "button", text: "Cancel job", hidden: TERMINAL.has(job.status) });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await still(token, api(`/v1/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" }));
      announce("Cancel requested.");
    } catch (err) {
      error.replaceChildren(errorBox(err));
    }
  });

  function setStatus(value) {
    status.replaceChildren(statusBadge(value));
    announce(`Job ${value.replace("_", " ")}.`);
  }
  function setProgress(value) {
    progress.value = value;
    percent.textContent = `${Math.round(value * 100)} %`;
  }
  function showRecord(record) {
    exit.textContent = record.exit_code ?? "—";
    reason.textContent = record.finish_reason || "—";
    setProgress(record.progress);
    if (record.error) error.replaceChildren(errorBox(`${record.error.code}: ${record.error.message}`));
    for (const name of ["stdout", "stderr"]) {
      if (!streams[name].textContent && record[name]) {
        // No event carried it (they expire; or the job ended before the page opened): the record's tail.
        streams[name].dataset.source = "record";
        streams[name].textContent = record[name];
      }
    }
  }
  async function ended() {
    cancel.hidden = true;
    transport.textContent = followedOver ? `ended (followed live over ${followedOver})` : "ended";
    try {
      job = await still(token, api(`/v1/jobs/${encodeURIComponent(jobId)}`));
      status.replaceChildren(statusBadge(job.status));
      showRecord(job);
      await renderOutputs(job, outputs);
    } catch (err) {
      outputs.replaceChildren(errorBox(err));
    }
  }

  show(`Job ${jobId}`,
    facts([
      ["Command", el("code", { text: `${job.stage} ${job.command}` })],
      ["Status", status],
      ["Progress", el("span", {}, progress, " ", percent)],
      ["Exit code", exit],
      ["Finish reason", reason],
      ["Created", when(job.created_at)],
      ["Live updates", transport],
      ["Arguments", el("code", { text: JSON.stringify(job.args) })],
    ]),
    el("p", {}, cancel),
    error,
    el("section", { "aria-labelledby": "logs-title" },
      el("h2", { id: "logs-title", text: "Logs" }),
      el("h3", { id: "stderr-title", text: "stderr" }), streams.stderr,
      el("h3", { id: "stdout-title", text: "stdout" }), streams.stdout),
    el("section", { "aria-labelledby": "outputs-title" }, el("h2", { id: "outputs-title", text: "Outputs" }), outputs));
  progress.setAttribute("aria-labelledby", "job-progress-text");

  if (TERMINAL.has(job.status)) {
    showRecord(job);
    await renderOutputs(job, outputs);
    return;
  }
  outputs.replaceChildren(el("p", { class: "muted", text: "Outputs appear once the job has ended." }));
  const watcher = follow(job, {
    onTransport: (name) => {
      followedOver = name;
      transport.textContent = `live, over ${name}`;
    },
    onEvent: (event) => {
      if (event.type === "snapshot") {
        setProgress(event.job.progress);
        status.replaceChildren(statusBadge(event.job.status));
      } else if (event.type === "log") {
        const pane = streams[event.stream];
        if (pane) {
          pane.dataset.source = "events";
          pane.append(event.text);
          pane.scrollTop = pane.scrollHeight;
        }
      } else if (event.type === "progress") {
        setProgress(event.progress);
      } else if (event.type === "status") {
        setStatus(event.status);
      }
    },
    onEnd: ended,
    onFail: (err) => {
      transport.textContent = "stopped";
      error.replaceChildren(errorBox(err));
    },
  });
  leave = () => watcher.stop();
}

// -- a new job -------------------------------------------------------------------------------------

async function commandsPage(token) {
  show("New job", el("p", { text: "Loading the commands…", class: "muted" }));
  let list;
  try {
    list = await still(token, api("/v1/commands"));
  } catch (error) {
    return failed(token, error);
  }
  const byStage = new Map();
  for (const item of list.items) {
    if (!byStage.has(item.stage)) byStage.set(item.stage, []);
    byStage.get(item.stage).push(item);
  }
  const sections = [...byStage].map(([stage, items]) =>
    el("section", { class: "commands", "aria-labelledby": `stage-${stage}` },
      el("h2", { id: `stage-${stage}`, text: stage }),
      el("ul", {}, items.map((item) =>
        el("li", {}, el("a", { href: `#/new/${encodeURIComponent(item.stage)}/${encodeURIComponent(item.command)}`, text: item.command }),
          item.summary ? el("span", { class: "muted", text: ` — ${item.summary}` }) : "")))));
  show("New job", el("p", { text: "Choose a command; its form is built from its contract." }), ...sections);
}

async function submitPage(stage, command, token) {
  const title = `New job: ${stage} ${command}`;
  show(title, el("p", { text: "Loading the contract…", class: "muted" }));
  let contract;
  try {
    contract = await still(token, api(`/v1/commands/${encodeURIComponent(stage)}/${encodeURIComponent(command)}`));
  } catch (error) {
    return failed(token, error);
  }
  const submit = el("button", { type: "submit", class: "primary", text: "Submit job" });
  const progress = el("div", { id: "submit-status", "aria-live": "polite" });
  const form = el("form", { class: "fields", id: "job-form", "aria-describedby": "contract-summary" },
    ...contractFields(contract), progress, el("div", {}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const args = await collectArgs(form, contract, (file) => {
        progress.textContent = `Uploading ${file.name}…`;
      });
      progress.textContent = "Submitting…";
      const job = await still(token, api("/v1/jobs", { method: "POST", body: { stage, command, args } }));
      announce(`Job ${job.job_id} submitted.`);
      location.hash = `#/jobs/${job.job_id}`;
    } catch (error) {
      progress.replaceChildren(errorBox(error));
      submit.disabled = false;
    }
  });
  show(title, el("p", { id: "contract-summary", text: contract.summary || "" }), form);
}

// -- uploads ---------------------------------------------------------------------------------------

async function uploadsPage(query, token) {
  const cursor = params(query).get("cursor");
  const file = el("input", { type: "file", id: "upload-file", name: "file", required: true, "aria-describedby": "upload-hint" });
  const done = el("div", { id: "upload-status", "aria-live": "polite" });
  const form = el("form", { class: "fields", "aria-label": "Upload a file" },
    el("div", { class: "field" },
      el("label", { for: "upload-file", text: "File" }),
      el("span", { class: "hint", id: "upload-hint", text: "Sent straight to S3; a job names it as asset://<id>." }),
      file),
    done,
    el("div", {}, el("button", { type: "submit", class: "primary", text: "Upload" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const picked = file.files[0];
    done.textContent = `Uploading ${picked.name}…`;
    try {
      const assetId = await upload(picked);
      done.replaceChildren(el("p", {}, `Uploaded ${picked.name}: `, el("code", { text: `asset://${assetId}` })));
      announce(`Uploaded ${picked.name}.`);
    } catch (error) {
      done.replaceChildren(errorBox(error));
    }
  });
  show("Uploads", form, el("p", { text: "Loading…", class: "muted" }));
  let page;
  try {
    page = await still(token, api(`/v1/assets?limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`));
  } catch (error) {
    return failed(token, error, form);
  }
  const rows = page.items.map((a) => el("tr", {},
    el("td", {}, el("code", { text: `asset://${a.asset_id}` })),
    el("td", { text: a.filename }),
    el("td", { text: `${a.media_type}, ${bytes(a.size)}` }),
    el("td", {}, statusBadge(a.status)),
    el("td", { text: when(a.created_at) })));
  const table = page.items.length
    ? el("table", {},
      el("caption", { text: "Uploaded files, newest first" }),
      el("thead", {}, el("tr", {}, ["Reference", "File", "Type", "Status", "Uploaded"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows))
    : el("p", { text: "Nothing uploaded yet." });
  const next = page.next_cursor ? el("nav", { class: "pager", "aria-label": "Pages of uploads" }, el("a", { href: `#/uploads?cursor=${encodeURIComponent(page.next_cursor)}`, text: "Next page" })) : "";
  show("Uploads", form, el("h2", { text: "Files" }), table, next);
}

// -- pipelines and maps (read-only) ------------------------------------------------------------------

function jobRows(items) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ["Step", "Job", "Command", "Status"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, items.map(([name, job]) => el("tr", {},
      el("td", { text: name }),
      el("td", {}, el("a", { href: `#/jobs/${job.job_id}` }, el("code", { text: job.job_id }))),
      el("td", { text: `${job.stage} ${job.command}` }),
      el("td", {}, statusBadge(job.status))))));
}

async function pipelinesPage(query, token) {
  show("Pipelines", el("p", { text: "Loading…", class: "muted" }));
  const cursor = params(query).get("cursor");
  let page;
  try {
    page = await still(token, api(`/v1/pipelines?limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`));
  } catch (error) {
    return failed(token, error);
  }
  const rows = page.items.map((p) => el("tr", {},
    el("td", {}, el("a", { href: `#/pipelines/${p.pipeline_id}` }, el("code", { text: p.pipeline_id }))),
    el("td", {}, statusBadge(p.status)),
    el("td", { text: String(p.steps.length) }),
    el("td", { text: when(p.created_at) })));
  const body = page.items.length
    ? el("table", {}, el("thead", {}, el("tr", {}, ["Pipeline", "Status", "Steps", "Created"].map((h) => el("th", { scope: "col", text: h })))), el("tbody", {}, rows))
    : el("p", { text: "No pipelines yet (POST /v1/pipelines, or `jobgate pipeline`)." });
  const next = page.next_cursor ? el("nav", { class: "pager", "aria-label": "Pages of pipelines" }, el("a", { href: `#/pipelines?cursor=${encodeURIComponent(page.next_cursor)}`, text: "Next page" })) : "";
  show("Pipelines", body, next);
}

async function pipelinePage(id, token) {
  show(`Pipeline ${id}`, el("p", { text: "Loading…", class: "muted" }));
  let p;
  try {
    p = await still(token, api(`/v1/pipelines/${encodeURIComponent(id)}`));
  } catch (error) {
    return failed(token, error);
  }
  show(`Pipeline ${id}`,
    facts([["Status", statusBadge(p.status)], ["Progress", `${Math.round(p.progress * 100)} %`], ["Created", when(p.created_at)]]),
    el("h2", { text: "Steps" }), jobRows(p.steps.map((s) => [s.name, s.job])));
}

function mapsPage() {
  const input = el("input", { type: "text", id: "map-id", name: "map-id", required: true, autocomplete: "off", spellcheck: "false" });
  const form = el("form", { class: "toolbar", role: "search", "aria-label": "Open a map" },
    el("div", { class: "field" }, el("label", { for: "map-id", text: "Map id" }), input),
    el("button", { type: "submit", text: "Open" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/maps/${encodeURIComponent(input.value.trim())}`;
  });
  show("Maps", el("p", { text: "A map runs one command over many chunks (POST /v1/maps, or `jobgate map`). Open one by its id." }), form);
}

async function mapPage(id, token) {
  show(`Map ${id}`, el("p", { text: "Loading…", class: "muted" }));
  let m;
  let chunks;
  try {
    m = await still(token, api(`/v1/maps/${encodeURIComponent(id)}`));
    chunks = await still(token, api(`/v1/maps/${encodeURIComponent(id)}/chunks?limit=${PAGE_SIZE}`));
  } catch (error) {
    return failed(token, error);
  }
  show(`Map ${id}`,
    facts([
      ["Command", el("code", { text: `${m.stage} ${m.command}` })],
      ["Status", statusBadge(m.status)],
      ["Progress", `${Math.round(m.progress * 100)} %`],
      ["Chunks", `${m.count} over ${m.over}, at most ${m.max_parallel} at once${m.paused ? " (paused)" : ""}`],
      ["Counts", Object.entries(m.counts).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["Merge", m.merge ? statusBadge(m.merge.status || "—") : "—"],
      ["Created", when(m.created_at)],
    ]),
    el("h2", { text: `First ${chunks.items.length} chunks` }), jobRows(chunks.items.map((c) => [String(c.chunk), c.job])));
}

// -- the router ------------------------------------------------------------------------------------

function route() {
  navigation += 1;
  const token = navigation;
  if (!apiKey()) return keyPage();
  nav.hidden = false;
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const link of nav.querySelectorAll("a")) {
    const current = link.getAttribute("href").slice(2) === (parts[0] || "jobs");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (parts[0] === "jobs" && parts[1]) return jobPage(parts[1], token);
  if (parts[0] === "new" && parts[2]) return submitPage(parts[1], parts[2], token);
  if (parts[0] === "new") return commandsPage(token);
  if (parts[0] === "uploads") return uploadsPage(query, token);
  if (parts[0] === "pipelines" && parts[1]) return pipelinePage(parts[1], token);
  if (parts[0] === "pipelines") return pipelinesPage(query, token);
  if (parts[0] === "maps" && parts[1]) return mapPage(parts[1], token);
  if (parts[0] === "maps") return mapsPage();
  return jobsPage(query, token);
}

document.getElementById("sign-out").addEventListener("click", () => {
  forgetKey();
  leave();
  location.hash = "";
  keyPage();
  announce("The key is forgotten.");
});
// The skip link moves focus without changing the hash (the hash is the console's route).
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", route);
route();
