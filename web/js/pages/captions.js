// Captions in sentences on the workbench: a vision-language captioner over the dataset (a cpu-queue task with
// progress per image), and batch edits across captions (find and replace, the trigger word put first).
import { get, post } from "../api.js";
import { field, h } from "../dom.js";
import { taskForm } from "./tools.js";

export async function captionPanel(datasetId, selectedIds, onDone, families) {
  const { captioners, setup } = await get("/captioners");
  const readers = families.filter((f) => f.captions === "sentences").map((f) => f.label);
  const card = h("section", { class: "card", "aria-label": "Captioning" }, h("h2", {}, "Caption in sentences"),
    h("p", { class: "hint" }, (readers.length ? `${readers.join(", ")} read${readers.length === 1 ? "s" : ""} ` +
      "sentences: " : "") + "a vision-language model writes one per image. Captions already there (yours " +
      "included) are kept unless you choose to replace them."));
  if (!captioners.length) {
    card.append(h("p", { class: "muted" }, "No captioner on this server yet: write captions by hand in the image " +
      "editor, or ask whoever runs this server to add one."), h("p", { class: "hint" }, setup || ""));
    return card;
  }
  const captioner = h("select", { name: "captioner" }, captioners.map((c) => h("option", { value: c.name },
    c.installed ? c.name : `${c.name} (downloads on first use)`)));
  const length = h("select", { name: "length" }, h("option", { value: "detailed" }, "detailed (a few sentences)"),
    h("option", { value: "short" }, "short (one sentence)"));
  const instruction = h("input", { type: "text", name: "instruction", size: 40, maxlength: 500 });
  const trigger = h("input", { type: "text", name: "trigger", size: 12, maxlength: 100 });
  const position = h("select", { name: "trigger_position" }, [["start", "at the start"], ["end", "at the end"],
    ["none", "leave it out"]].map(([v, label]) => h("option", { value: v }, label)));
  const hints = h("input", { type: "checkbox", name: "tag_hints" });
  const mode = h("select", { name: "mode" }, h("option", { value: "skip_captioned" }, "only images without a caption"),
    h("option", { value: "overwrite" }, "replace every caption"));
  const status = h("p", { role: "status" });
  const run = h("button", { type: "submit" }, "Caption");
  const start = (imageIds) => post(`/datasets/${datasetId}/caption`, {
    captioner: captioner.value, length: length.value, instruction: instruction.value, trigger: trigger.value.trim(),
    trigger_position: position.value, tag_hints: hints.checked, mode: mode.value, image_ids: imageIds });
  card.append(taskForm({ run, status, selectedIds, start, onDone },
  h("div", { class: "row" }, field("Captioner", captioner), field("Length", length), field("Mode", mode)),
  h("div", { class: "row" }, field("Trigger word", trigger, "For example: sks"), field("Put it", position),
    field("Instruction (optional)", instruction, "Qwen2.5-VL reads it, e.g. “Name the art style.” Florence-2 " +
      "reads its own prompts only.")),
  h("div", { class: "row" }, h("label", {}, hints, " Give each image's tags to the captioner as hints"), run),
  h("p", { class: "hint" }, "Captions the selected images, or all when none is selected."), status));
  return card;
}

export function batchCaptionPanel(datasetId, selectedIds, onDone) {
  const status = h("p", { class: "muted", role: "status" });
  const send = async (body) => {
    const ids = selectedIds();
    try {
      const result = await post(`/datasets/${datasetId}/captions/batch`, { ...body, image_ids: ids.length ? ids : null });
      status.textContent = `${result.changed} of ${result.matched} images changed`;
      status.className = "muted";
      await onDone();
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  };
  const find = h("input", { type: "text", name: "find", size: 24 });
  const replaceWith = h("input", { type: "text", name: "replace_with", size: 24 });
  const prefix = h("input", { type: "text", name: "prefix", size: 12 });
  return h("section", { class: "card", "aria-label": "Batch captions" }, h("h2", {}, "Batch captions"),
    h("p", { class: "hint" }, "Applies to the captions of the selected images, or of all when none is selected; " +
      "images without a caption are left alone."),
    h("form", { class: "row", "aria-label": "Find and replace", onsubmit: (e) => {
      e.preventDefault();
      send({ action: "replace", find: find.value, replace_with: replaceWith.value });
    } }, field("Find", find), field("Replace with", replaceWith), h("button", { type: "submit" }, "Replace")),
    h("form", { class: "row", "aria-label": "Trigger word first", onsubmit: (e) => {
      e.preventDefault();
      send({ action: "prefix", prefix: prefix.value });
    } }, field("Trigger word", prefix, "Put at the start of every caption that does not start with it"),
    h("button", { type: "submit" }, "Insert at the start")),
    status);
}

// "12 words · 71 characters": what a caption's length is, as the editor shows it while typing
export function captionLength(text) {
  const words = text.trim() ? text.trim().split(/\s+/).length : 0;
  return `${words} word${words === 1 ? "" : "s"} · ${text.length} characters`;
}
