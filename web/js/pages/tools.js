// Dataset tools on the workbench: auto-tagging and focus crops (cpu-queue tasks with progress), near-duplicates,
// export. Each panel takes the dataset id, the selection and what to do when something changed.
import { get, post } from "../api.js";
import { field, h, splitList } from "../dom.js";

// Polls a dataset task until it ends, showing its progress in `box`; resolves to the finished task.
export async function followTask(task, box) {
  const bar = h("progress", { max: Math.max(1, task.total), value: task.done });
  const text = h("span", {});
  const label = task.kind === "screen" ? "screening new images"
    : task.on_upload ? "tagging new images" : task.kind.replace("_", " ");
  box.replaceChildren(bar, " ", text);
  for (;;) {
    bar.max = Math.max(1, task.total);
    bar.value = task.done;
    text.textContent = `${label}: ` + (task.waiting_for || `${task.status}, ${task.done} of ${task.total || "?"} images`);
    if (task.status === "succeeded" || task.status === "failed") break;
    await new Promise((resolve) => setTimeout(resolve, 700));
    task = await get(`/tasks/${task.id}`);
  }
  const result = Object.entries(task.result).map(([k, v]) => `${k.replace("_", " ")} ${v}`).join(", ");
  box.replaceChildren(h("span", { class: task.status === "failed" ? "error" : "muted" },
    `${label}: ` + (task.status === "failed" ? `failed: ${task.error}` : `done: ${result || "nothing to do"}`)));
  return task;
}

// A form that starts a task over the selected images (all when none is selected) and follows it in `status`; the
// button waits while it runs. `start(imageIds)` posts the request and returns the task.
export function taskForm({ run, status, selectedIds, start, onDone }, ...children) {
  return h("form", { onsubmit: async (e) => {
    e.preventDefault();
    const ids = selectedIds();
    run.disabled = true;
    try {
      await followTask(await start(ids.length ? ids : null), status);
      await onDone();
    } catch (error) {
      status.replaceChildren(h("span", { class: "error" }, error.message));
    } finally { run.disabled = false; }
  } }, ...children);
}

export async function autotagPanel(datasetId, selectedIds, onDone) {
  const { taggers, message, on_upload: onUpload } = await get("/taggers");
  const card = h("section", { class: "card", "aria-label": "Auto-tagging" }, h("h2", {}, "Auto-tag"));
  if (message) card.append(h("p", { class: "muted" }, message));
  if (onUpload) card.append(h("p", { class: "hint" }, "New images are tagged as they arrive (images that come with tags keep them)."));
  if (!taggers.length) return card;
  const tagger = h("select", { name: "tagger" }, taggers.map((t) => h("option", { value: t.name },
    t.installed ? t.name : `${t.name} (downloads on first use)`)));
  const general = h("input", { type: "number", name: "general_threshold", min: 0, max: 1, step: 0.01, value: 0.35 });
  const character = h("input", { type: "number", name: "character_threshold", min: 0, max: 1, step: 0.01, value: 0.85 });
  const mode = h("select", { name: "mode" }, [["append", "append to existing tags"], ["overwrite", "replace tags"],
    ["skip_tagged", "only untagged images"]].map(([v, label]) => h("option", { value: v }, label)));
  const blacklist = h("input", { type: "text", name: "blacklist", size: 30 });
  const ratings = h("input", { type: "checkbox", name: "include_ratings" });
  const spaces = h("input", { type: "checkbox", name: "underscores_to_spaces", checked: true });
  const status = h("p", { role: "status" });
  const run = h("button", { type: "submit" }, "Auto-tag");
  const start = (imageIds) => post(`/datasets/${datasetId}/autotag`, {
    tagger: tagger.value, general_threshold: Number(general.value), character_threshold: Number(character.value),
    mode: mode.value, blacklist: splitList(blacklist.value), include_ratings: ratings.checked,
    underscores_to_spaces: spaces.checked, image_ids: imageIds });
  card.append(taskForm({ run, status, selectedIds, start, onDone },
  h("p", { class: "hint" }, "Tags the selected images, or all when none is selected, on the server's cpu queue."),
  h("div", { class: "row" }, field("Tagger", tagger), field("General threshold", general),
    field("Character threshold", character), field("Mode", mode),
    field("Never add (comma-separated)", blacklist)),
  h("div", { class: "row" }, h("label", {}, ratings, " Add the rating tag"),
    h("label", {}, spaces, " Underscores to spaces"), run), status));
  return card;
}

export function duplicatesPanel(datasetId, images, select) {
  const list = h("div", { role: "status" });
  const find = async () => {
    const { groups } = await get(`/datasets/${datasetId}/duplicates`);
    const name = (id) => (images().find((i) => i.id === id) || { filename: id }).filename;
    list.replaceChildren(groups.length
      ? h("ul", {}, groups.map((group) => h("li", {}, group.map(name).join(" ≈ "), " ",
          h("button", { type: "button", class: "secondary", onclick: () => select(group.slice(1)) },
            "Select all but the first"))))
      : h("p", { class: "muted" }, "No near-duplicates."));
  };
  return h("section", { class: "card", "aria-label": "Near-duplicates" }, h("h2", {}, "Near-duplicates"),
    h("button", { type: "button", class: "secondary", onclick: find }, "Find near-duplicates"), list);
}

export function exportLinks(datasetId) {
  return h("p", { class: "row" },
    h("a", { href: `/api/v1/datasets/${datasetId}/export`, download: "" }, "Export kohya zip"),
    h("a", { href: `/api/v1/datasets/${datasetId}/tag-occurrence`, download: "tag_occurrence.txt" }, "Tag summary"));
}

// Tasks the server started for this dataset (tagging on upload), followed until they end; `onDone` after each.
const followed = new Set();
export async function followOpenTasks(datasetId, box, onDone) {
  const open = (await get(`/datasets/${datasetId}/tasks?limit=20`))
    .filter((t) => (t.status === "queued" || t.status === "running") && !followed.has(t.id));
  open.forEach((t) => followed.add(t.id));
  for (const task of open) {
    const line = h("p", {});
    box.append(line);
    await followTask(task, line);
    await onDone();
  }
}
