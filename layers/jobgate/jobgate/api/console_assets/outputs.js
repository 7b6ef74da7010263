// A job's outputs: each with its presigned download link, and a preview of pictures, videos, CSV and
// JSON (read from S3 with the presigned GET: the bucket's CORS rules let the console read it).

import { api } from "./api.js";
import { bytes, el, errorBox } from "./dom.js";

const PREVIEW_BYTES = 256 * 1024;
const CSV_ROWS = 20;

function baseName(name) {
  return name.split("/").pop();
}

// One CSV line into its fields (quoted fields may hold commas and doubled quotes).
function csvFields(line) {
  const fields = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      fields.push(field);
      field = "";
    } else field += c;
  }
  fields.push(field);
  return fields;
}

async function textPreview(output) {
  const response = await fetch(output.url, { headers: { Range: `bytes=0-${PREVIEW_BYTES - 1}` } });
  if (!response.ok) throw new Error(`Could not read ${output.name}: HTTP ${response.status}`);
  return response.text();
}

async function preview(output) {
  const type = output.media_type.split(";")[0].trim();
  const label = `Preview of ${output.name}`;
  if (type === "image/png" || type === "image/jpeg" || type === "image/gif" || type === "image/webp") {
    return el("img", { src: output.url, alt: label, loading: "lazy" });
  }
  if (type === "video/mp4" || type === "video/webm") {
    return el("video", { src: output.url, controls: true, muted: true, preload: "metadata", "aria-label": label });
  }
  if (type === "text/csv") {
    const lines = (await textPreview(output)).split(/\r?\n/).filter((line) => line !== "");
    const shown = lines.slice(0, CSV_ROWS + 1).map(csvFields);
    const [head, ...rows] = shown;
    return el("table", {},
      el("caption", { text: `${label}: the first ${rows.length} rows` }),
      el("thead", {}, el("tr", {}, (head || []).map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", { text: cell }))))));
  }
  if (type === "application/json" || type.endsWith("+json")) {
    const text = await textPreview(output);
    let shown = text;
    try {
      shown = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      // cut at the preview's size, or not JSON after all: shown as it is
    }
    return el("pre", { tabindex: "0", "aria-label": label, text: shown });
  }
  if (type.startsWith("text/")) {
    return el("pre", { tabindex: "0", "aria-label": label, text: await textPreview(output) });
  }
  return null;
}

export async function renderOutputs(job, container) {
  if (!job.output_count) {
    container.replaceChildren(el("p", { text: "This job wrote no output." }));
    return;
  }
  let page;
  try {
    page = await api(`/v1/jobs/${encodeURIComponent(job.job_id)}/outputs?limit=100`);
  } catch (error) {
    container.replaceChildren(errorBox(error));
    return;
  }
  const list = el("ul", { class: "outputs" });
  for (const output of page.items) {
    const item = el("li", {},
      el("h3", {}, el("code", { text: output.name })),
      el("p", { class: "muted", text: `${output.media_type}, ${bytes(output.size)}` }));
    try {
      const shown = await preview(output);
      if (shown) item.append(shown);
    } catch (error) {
      item.append(errorBox(error));
    }
    item.append(el("a", { href: output.url, download: baseName(output.name), text: `Download ${baseName(output.name)}` }));
    list.append(item);
  }
  const more = page.next_cursor ? el("p", { class: "muted", text: `The first ${page.items.length} of ${job.output_count} outputs.` }) : "";
  container.replaceChildren(list, more);
}
