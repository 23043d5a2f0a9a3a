// Publishing an epoch, and the list of your published models (everyone's public ones are in the gallery).
import { get, post, getAll } from "../api.js";
import { field, h, mount, showErrors, splitList } from "../dom.js";

export const megabytes = (bytes) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;

// The fields an owner fills on publishing and edits on the model page, with their current values.
export function modelFields(model = {}) {
  const inputs = {
    trigger_words: h("input", { type: "text", name: "trigger_words", value: (model.trigger_words || []).join(", ") }),
    tags: h("input", { type: "text", name: "tags", value: (model.tags || []).join(", ") }),
    recommended_weight: h("input", { type: "number", name: "recommended_weight", step: 0.05, min: -4, max: 4,
                                     value: model.recommended_weight ?? 0.8 }),
    license: h("input", { type: "text", name: "license", maxlength: 64, value: model.license || "" }),
    description: h("textarea", { name: "description", rows: 5, cols: 60 }, model.description || ""),
    visibility: h("select", { name: "visibility" }, h("option", { value: "private" }, "private (only you)"),
      h("option", { value: "public" }, "public (everybody; the gallery once it has a picture)")),
  };
  inputs.visibility.value = model.visibility || "private";
  const values = () => ({ trigger_words: splitList(inputs.trigger_words.value), tags: splitList(inputs.tags.value),
    recommended_weight: Number(inputs.recommended_weight.value), license: inputs.license.value,
    description: inputs.description.value, visibility: inputs.visibility.value });
  const fields = [field("Trigger words (comma-separated)", inputs.trigger_words, "For example: sks"),
    field("Tags (comma-separated)", inputs.tags, "What the gallery's search finds it by."),
    field("Recommended weight", inputs.recommended_weight), field("License", inputs.license, "For example: CreativeML Open RAIL-M"),
    field("Description", inputs.description, "Markdown: **bold**, lists, links. HTML is shown as text."),
    field("Visibility", inputs.visibility)];
  return { fields, values };
}

export async function publishPage(jobId, n) {
  const job = await get(`/jobs/${jobId}`);
  // the trigger words are what the user put in front of every caption ("sks", the character's name …)
  const suggested = (await get(`/datasets/${job.dataset_id}/trigger-words`)).trigger_words;
  const name = h("input", { type: "text", name: "name", required: true, value: job.name });
  const about = modelFields({ trigger_words: suggested });
  const box = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const model = await post("/models", { job_id: jobId, epoch: n, name: name.value, ...about.values() });
      location.hash = `#/models/${model.id}`;
    } catch (error) {
      showErrors(form, box, error);
    }
  } },
  field("Name", name, "Also the file name and the <lora:name:weight> tag: no spaces, colons or slashes."),
  ...about.fields, box, h("button", { type: "submit" }, "Publish"));
  mount(h("h1", {}, `Publish ${job.name}, epoch ${n}`), form);
}

// the list's columns; on a phone each row reads as a card of "title: value" lines
const COLUMNS = [["Name", (m) => h("a", { href: `#/models/${m.id}` }, m.name)],
  ["Base model", (m) => `${m.family}: ${m.base_model}`], ["Network", (m) => m.network_type],
  ["Visibility", (m) => (m.hidden_reason ? `hidden: ${m.hidden_reason}`
    : m.in_gallery ? "in the gallery" : m.visibility === "public" ? "public (add a picture for the gallery)"
      : "private")],
  ["Downloads", (m) => String(m.downloads)], ["Size", (m) => megabytes(m.size)],
  ["Snippet", (m) => h("code", {}, m.snippet)]];

export async function modelsPage() {
  const models = await getAll("/models");
  mount(h("h1", {}, "Your models"), h("p", {}, "Everyone's public models are in the ",
    h("a", { href: "#/gallery" }, "gallery"), "."), models.length
    ? h("table", { class: "stack" }, h("thead", {}, h("tr", {}, COLUMNS.map(([title]) => h("th", {}, title)))),
      h("tbody", {}, models.map((m) => h("tr", {}, COLUMNS.map(([title, cell], i) =>
        h("td", i ? { "data-label": title } : {}, cell(m)))))))
    : h("p", { class: "muted" }, "Nothing published yet: publish an epoch from a job page."));
}
