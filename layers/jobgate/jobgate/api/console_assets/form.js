// A command's contract (GET /v1/commands/{stage}/{command}) as a form, and the form's values as the
// job's args: a file field per input (uploaded to an asset first), a checkbox per flag, a list per
// choice, numbers with their range, and space-separated values for what takes several.

import { upload } from "./api.js";
import { el } from "./dom.js";

function fieldId(param) {
  return `arg-${param.dest}`;
}

function labelText(param) {
  const flag = param.kind === "positional" ? param.dest : (param.flags.find((f) => f.startsWith("--")) || param.flags[0]);
  return param.required ? `${flag} (required)` : flag;
}

function hintFor(param) {
  const parts = [];
  if (param.help) parts.push(/[.!?)]$/.test(param.help) ? param.help : `${param.help}.`);
  if (param.role === "input") {
    parts.push(param.media_types.length ? `A file (${param.media_types.join(", ")}).` : "A file.");
  }
  if (param.multiple && param.role !== "input") parts.push("Several values: separate them with spaces.");
  if (param.default !== null && param.default !== undefined && param.kind !== "flag") {
    parts.push(`Default: ${Array.isArray(param.default) ? param.default.join(" ") : param.default}.`);
  }
  return parts.join(" ");
}

function control(param, id, hintId) {
  const described = hintId || undefined;
  if (param.kind === "flag") {
    return el("input", { type: "checkbox", id, name: param.dest, "aria-describedby": described, checked: param.default === true });
  }
  if (param.role === "input") {
    const accept = param.media_types.length ? param.media_types.join(",") : undefined;
    return el("input", {
      type: "file", id, name: param.dest, multiple: param.multiple, accept, "aria-describedby": described,
      required: param.required,
    });
  }
  if (param.choices && param.choices.length && !param.multiple) {
    return el(
      "select",
      { id, name: param.dest, "aria-describedby": described, required: param.required },
      el("option", { value: "", text: param.required ? "Choose…" : "(default)" }),
      param.choices.map((choice) => el("option", { value: String(choice), text: String(choice) })),
    );
  }
  const numeric = (param.type === "integer" || param.type === "number") && !param.multiple;
  return el("input", {
    type: numeric ? "number" : "text",
    step: numeric ? (param.type === "integer" ? "1" : "any") : undefined,
    min: numeric && param.minimum !== null ? param.minimum : undefined,
    max: numeric && param.maximum !== null ? param.maximum : undefined,
    id,
    name: param.dest,
    "aria-describedby": described,
    required: param.required,
    autocomplete: "off",
    spellcheck: "false",
  });
}

export function contractFields(contract) {
  return contract.params.map((param) => {
    const id = fieldId(param);
    const hint = hintFor(param);
    const hintId = hint ? `${id}-hint` : null;
    const input = control(param, id, hintId);
    const label = el("label", { for: id, text: labelText(param) });
    const hintNode = hint ? el("span", { class: "hint", id: hintId, text: hint }) : null;
    if (param.kind === "flag") return el("div", { class: "field check" }, input, " ", label, hintNode);
    const field = el("div", { class: "field" }, label, hintNode, input);
    if (param.role === "input") {
      const refId = `${id}-ref`;
      field.append(
        el("label", { for: refId, class: "hint", text: `or ${labelText(param)} as a reference (asset://…, job://…/name)` }),
        el("input", { type: "text", id: refId, name: `${param.dest}-ref`, autocomplete: "off", spellcheck: "false" }),
      );
    }
    return field;
  });
}

function typed(param, text) {
  if (param.type === "integer") return Number.parseInt(text, 10);
  if (param.type === "number") return Number(text);
  return text;
}

// The args of the job: files are uploaded here (onUpload tells which, as it starts).
export async function collectArgs(form, contract, onUpload) {
  const args = {};
  for (const param of contract.params) {
    const input = form.elements.namedItem(param.dest);
    if (!input) continue;
    if (param.kind === "flag") {
      if (input.checked !== (param.default === true)) args[param.dest] = input.checked;
      continue;
    }
    if (param.role === "input") {
      const refs = [];
      for (const file of input.files) {
        onUpload(file);
        refs.push(`asset://${await upload(file)}`);
      }
      const typedRef = form.elements.namedItem(`${param.dest}-ref`).value.trim();
      if (typedRef) refs.push(...typedRef.split(/\s+/));
      if (refs.length) args[param.dest] = param.multiple ? refs : refs[0];
      continue;
    }
    const text = input.value.trim();
    if (text === "") continue;
    args[param.dest] = param.multiple ? text.split(/\s+/).map((part) => typed(param, part)) : typed(param, text);
  }
  return args;
}
