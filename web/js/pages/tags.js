// Batch tag editing and the tag-frequency list (a click filters the grid).
import { post } from "../api.js";
import { field, h, splitList } from "../dom.js";

export function batchTagPanel(datasetId, selectedIds, onDone) {
  const tags = h("input", { type: "text", name: "tags", list: "dataset-tags" });
  const action = h("select", { name: "action" }, ["add", "remove", "replace"].map((a) => h("option", { value: a }, a)));
  const position = h("select", { name: "position" }, h("option", { value: "start" }, "at the start"),
    h("option", { value: "end" }, "at the end"));
  const replaceWith = h("input", { type: "text", name: "replace_with" });
  const status = h("p", { class: "muted", role: "status" });
  const form = h("form", { class: "card", "aria-label": "Batch tags", onsubmit: async (e) => {
    e.preventDefault();
    const ids = selectedIds();
    try {
      const result = await post(`/datasets/${datasetId}/tags/batch`, {
        action: action.value, tags: splitList(tags.value), position: position.value,
        replace_with: splitList(replaceWith.value), image_ids: ids.length ? ids : null });
      status.textContent = `${result.changed} of ${result.matched} images changed`;
      status.className = "muted";
      onDone();
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  } },
  h("h2", {}, "Batch tags"),
  h("p", { class: "hint" }, "Add the trigger word at the start: training keeps the first keep_tokens tags in " +
    "front and never shuffles or drops them. Applies to the selected images, or to all when none is selected."),
  h("div", { class: "row" }, field("Action", action), field("Tags (comma-separated)", tags, "For example: sks"), field("Where", position),
    field("Replace with", replaceWith, "For replace: the new tag(s)"), h("button", { type: "submit" }, "Apply")),
  status);
  return form;
}

export function frequencyList(frequencies, activeTag, onPick) {
  const items = frequencies.map(({ tag, count }) => h("li", {}, h("button", {
    type: "button", class: tag === activeTag ? "active" : "", "aria-pressed": String(tag === activeTag),
    onclick: () => onPick(tag === activeTag ? null : tag) }, h("span", {}, tag), h("span", { class: "muted" }, count))));
  return h("section", { class: "card freq" }, h("h2", {}, "Tags"),
    frequencies.length ? h("ul", { style: "list-style:none;padding:0;margin:0" }, items)
      : h("p", { class: "muted" }, "No tags yet."),
    h("datalist", { id: "dataset-tags" }, frequencies.map(({ tag }) => h("option", { value: tag }))));
}
