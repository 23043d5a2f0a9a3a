// Publishing an epoch, the model page (previews, download, a copyable <lora:…> snippet) and the models list.
import { del, get, patch, post, getAll } from "../api.js";
import { field, h, mount, showErrors, splitList } from "../dom.js";

export async function publishPage(jobId, n) {
  const job = await get(`/jobs/${jobId}`);
  // the trigger words are what the user put in front of every caption ("sks", the character's name …)
  const suggested = (await get(`/datasets/${job.dataset_id}/trigger-words`)).trigger_words;
  const name = h("input", { type: "text", name: "name", required: true, value: job.name });
  const triggers = h("input", { type: "text", name: "trigger_words", value: suggested.join(", ") });
  const description = h("textarea", { name: "description", rows: 4, cols: 60 });
  const visibility = h("select", { name: "visibility" }, h("option", { value: "private" }, "private (only you)"),
    h("option", { value: "public" }, "public (everybody on this server)"));
  const box = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const model = await post("/models", { job_id: jobId, epoch: n, name: name.value, description: description.value,
        trigger_words: splitList(triggers.value), visibility: visibility.value });
      location.hash = `#/models/${model.id}`;
    } catch (error) {
      showErrors(form, box, error);
    }
  } },
  field("Name", name, "Also the file name and the <lora:name:weight> tag: no spaces, colons or slashes."),
  field("Trigger words (comma-separated)", triggers, "For example: sks"), field("Description", description), field("Visibility", visibility),
  box, h("button", { type: "submit" }, "Publish"));
  mount(h("h1", {}, `Publish ${job.name}, epoch ${n}`), form);
}

export async function modelPage(modelId) {
  const model = await get(`/models/${modelId}`);
  const snippet = h("code", { class: "snippet" }, model.snippet);
  const copied = h("span", { class: "muted", role: "status" });
  mount(h("h1", {}, model.name),
    h("p", { class: "muted" }, `${model.visibility} · by ${model.owner} · epoch ${model.epoch} · published ${new Date(model.created_at).toLocaleString()}`),
    h("dl", { class: "facts" }, h("dt", {}, "Base model"), h("dd", {}, `${model.family}: ${model.base_model}`),
      h("dt", {}, "Network"), h("dd", {}, model.network_type), h("dt", {}, "File size"), h("dd", {}, megabytes(model.size))),
    model.description && h("p", {}, model.description),
    model.trigger_words.length > 0 && h("p", {}, "Trigger words: ", model.trigger_words.join(", ")),
    h("p", {}, "Use it with ", snippet, " ", h("button", { type: "button", class: "secondary", onclick: async () => {
      await navigator.clipboard.writeText(model.snippet).then(() => (copied.textContent = "copied"),
        () => (copied.textContent = "select the text to copy it"));
    } }, "Copy"), " ", copied),
    h("p", {}, h("a", { href: model.download_url, download: `${model.name}.safetensors` }, `Download ${model.name}.safetensors`)),
    h("div", { class: "chips" }, model.previews.map((url, i) => h("img", { src: url, alt: `preview ${i + 1}`, style: "width:160px" }))),
    model.owner_id === (await get("/me").catch(() => ({}))).id && ownerControls(model));
}

export const megabytes = (bytes) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;

// Rename, describe, change the trigger words or who sees it, or unpublish (the job and its files stay).
function ownerControls(model) {
  const name = h("input", { type: "text", name: "name", required: true, value: model.name });
  const triggers = h("input", { type: "text", name: "trigger_words", value: model.trigger_words.join(", ") });
  const description = h("textarea", { name: "description", rows: 3, cols: 50 }, model.description);
  const visibility = h("select", { name: "visibility" }, ["private", "public"].map((v) =>
    h("option", { value: v, selected: v === model.visibility }, v)));
  const box = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", "aria-label": "Manage this model", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await patch(`/models/${model.id}`, { name: name.value, visibility: visibility.value,
        trigger_words: splitList(triggers.value), description: description.value });
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (error) { showErrors(form, box, error); }
  } }, h("h2", {}, "Manage"), h("div", { class: "row" }, field("Name", name), field("Visibility", visibility),
    field("Trigger words (comma-separated)", triggers), field("Description", description),
    h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", class: "secondary", onclick: async () => {
      if (!confirm(`Unpublish "${model.name}"? Its job and epoch files stay.`)) return;
      await del(`/models/${model.id}`);
      location.hash = "#/models";
    } }, "Unpublish")), box);
  return form;
}

// the list's columns; on a phone each row reads as a card of "title: value" lines
const COLUMNS = [["Name", (m) => h("a", { href: `#/models/${m.id}` }, m.name)], ["By", (m) => m.owner],
  ["Base model", (m) => `${m.family}: ${m.base_model}`], ["Network", (m) => m.network_type],
  ["Trigger words", (m) => m.trigger_words.join(", ")], ["Visibility", (m) => m.visibility],
  ["Size", (m) => megabytes(m.size)], ["Snippet", (m) => h("code", {}, m.snippet)]];

export async function modelsPage() {
  const models = await getAll("/models");
  mount(h("h1", {}, "Models"), models.length
    ? h("table", { class: "stack" }, h("thead", {}, h("tr", {}, COLUMNS.map(([title]) => h("th", {}, title)))),
      h("tbody", {}, models.map((m) => h("tr", {}, COLUMNS.map(([title, cell], i) =>
        h("td", i ? { "data-label": title } : {}, cell(m)))))))
    : h("p", { class: "muted" }, "Nothing published yet: publish an epoch from a job page."));
}
