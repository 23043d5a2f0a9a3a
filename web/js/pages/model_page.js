// A model's page: cover, showcase, description, what it was trained with, the <lora:…> snippet, download, "test"
// and "report" for signed-in users; its owner also edits the page, picks its pictures and reads reports about it.
import { api, del, get, getAll, patch, post } from "../api.js";
import { field, h, mount, showErrors, zoomable } from "../dom.js";
import { rendered } from "../generation.js";
import { megabytes, modelFields } from "./models.js";

const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));

function facts(model) {
  const rows = [["Base model", `${model.family}: ${model.base_model}`], ["Network", model.network_type],
    ["Recommended weight", String(model.recommended_weight)], ["License", model.license || "not given"],
    ["Trigger words", model.trigger_words.join(", ") || "none"], ["Tags", model.tags.join(", ") || "none"],
    ["Downloads", String(model.downloads)], ["File size", megabytes(model.size)]];
  return h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function snippetLine(model) {
  const copied = h("span", { class: "muted", role: "status" });
  return h("p", {}, "Use it with ", h("code", { class: "snippet" }, model.snippet), " ",
    h("button", { type: "button", class: "secondary", onclick: () => navigator.clipboard.writeText(model.snippet)
      .then(() => (copied.textContent = "copied"), () => (copied.textContent = "select the text to copy it")) },
    "Copy"), " ", copied);
}

function showcase(model, owner) {
  return h("div", { class: "gallery", "aria-label": "Showcase" }, model.showcase.map((item, i) =>
    h("figure", {}, zoomable(h("img", { src: item.url, alt: `showcase image ${i + 1}` })),
      owner && item.screening !== "allowed" ? h("figcaption", { class: `screen-note screen-${item.screening}` },
        item.screening_reason || item.screening) : null,
      owner ? h("figcaption", { class: "row" },
        item.id === model.cover_id ? "cover" :
          h("button", { type: "button", class: "link", onclick: async () => {
            await patch(`/models/${model.id}`, { cover_id: item.id }); refresh(); } }, "Make cover"),
        h("button", { type: "button", class: "link", onclick: async () => {
          await del(`/models/${model.id}/showcase/${item.id}`); refresh(); } }, "Remove")) : null)));
}

function testForm(model) {
  const prompt = h("input", { type: "text", name: "prompt", size: 50, required: true,
                              value: `${model.trigger_words[0] || model.name}, a portrait` });
  const weight = h("input", { type: "number", name: "weight", step: 0.05, min: -2, max: 2,
                              value: model.recommended_weight });
  const status = h("p", { role: "status" });
  const result = h("div", { class: "generated chips", "aria-live": "polite" });
  const form = h("form", { class: "card", "aria-label": "Test this model", onsubmit: async (e) => {
    e.preventDefault();
    status.className = "muted";
    try {
      const gen = await rendered(await post(`/models/${model.id}/test`, { prompt: prompt.value,
        weight: Number(weight.value) }), status);
      status.textContent = "Done" + (gen.notes.length ? ` (${gen.notes.join("; ")})` : "");
      result.prepend(...gen.images.map((url) => zoomable(h("img", { src: url, alt: `a test of ${model.name}` }))));
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  } }, h("h2", {}, "Test it"), h("div", { class: "row" }, field("Prompt", prompt), field("Weight", weight),
    h("button", { type: "submit" }, "Generate")), status, result);
  return form;
}

function reportForm(model) {
  const reason = h("input", { type: "text", name: "reason", size: 50, required: true, minlength: 3 });
  const box = h("p", { class: "error", role: "alert" });
  const said = h("p", { role: "status" });
  const form = h("form", { class: "card", "aria-label": "Report this model", onsubmit: async (e) => {
    e.preventDefault();
    try {
      said.textContent = (await post(`/models/${model.id}/reports`, { reason: reason.value })).message;
      showErrors(form, box, null);
    } catch (error) { showErrors(form, box, error); }
  } }, h("details", {}, h("summary", {}, "Report this model"),
    h("div", { class: "row" }, field("What is wrong", reason), h("button", { type: "submit" }, "Report")), box, said));
  return form;
}

function manage(model) {
  const name = h("input", { type: "text", name: "name", required: true, value: model.name });
  const about = modelFields(model);
  const box = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", "aria-label": "Manage this model", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await patch(`/models/${model.id}`, { name: name.value, ...about.values() });
      refresh();
    } catch (error) { showErrors(form, box, error); }
  } }, h("h2", {}, "Manage"), field("Name", name), ...about.fields,
  h("div", { class: "row" }, h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", class: "secondary", onclick: async () => {
      if (!confirm(`Unpublish "${model.name}"? Its job and epoch files stay.`)) return;
      await del(`/models/${model.id}`);
      location.hash = "#/models";
    } }, "Unpublish")), box);
  return form;
}

async function pictures(model) {
  const offered = await getAll(`/models/${model.id}/showcase/candidates`);
  const box = h("p", { class: "error", role: "alert" });
  const picker = h("input", { type: "file", multiple: true, accept: "image/png,image/jpeg",
                              "aria-label": "Upload pictures" });
  picker.addEventListener("change", async () => {
    const data = new FormData();
    for (const file of picker.files) data.append("files", file);
    try {
      const results = await api("POST", `/models/${model.id}/showcase/upload`, data, { form: true });
      const failed = results.filter((r) => r.error);
      if (failed.length) box.textContent = failed.map((r) => `${r.filename}: ${r.error}`).join("; ");
      else refresh();
    } catch (error) { box.textContent = error.message; }
  });
  return h("section", { class: "card", "aria-label": "Pictures" }, h("h2", {}, "Pictures"),
    h("p", { class: "hint" }, "Up to 20 on the page; the first (or the one you make the cover) is its face in the ",
      "gallery, which lists public models with at least one picture. Uploads are screened before others see them."),
    h("div", { class: "gallery" }, offered.map((c) => h("figure", {}, h("img", { src: c.url, alt: c.name }),
      h("figcaption", {}, c.name, " ", h("button", { type: "button", class: "secondary", onclick: async () => {
        try { await post(`/models/${model.id}/showcase`, { keys: [c.key] }); refresh(); }
        catch (error) { box.textContent = error.message; }
      } }, "Add"))))),
    field("Upload pictures", picker), box);
}

async function reportsAbout(model) {
  const found = await get(`/models/${model.id}/reports`);
  if (!found.length) return null;
  return h("section", { class: "card", "aria-label": "Reports" }, h("h2", {}, "Reports about this model"),
    h("ul", {}, found.map((r) => h("li", {}, `“${r.reason}”: ${r.state}`, r.decision ? ` (${r.decision})` : ""))));
}

export async function modelPage(modelId) {
  const [model, me] = await Promise.all([get(`/models/${modelId}`), get("/me").catch(() => null)]);
  const owner = me !== null && me.id === model.owner_id;
  const description = h("div", { class: "description" });
  description.innerHTML = model.description_html; // rendered on the server without raw HTML or unsafe links
  const parameters = h("details", {}, h("summary", {}, "Trained with"), h("dl", { class: "params" },
    Object.entries(model.parameters).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, JSON.stringify(v))])));
  mount(h("h1", {}, model.name),
    h("p", { class: "muted" }, `${model.visibility} · by ${model.owner} · epoch ${model.epoch} · published ` +
      new Date(model.created_at).toLocaleString()),
    owner && model.hidden_reason ? h("p", { class: "error", role: "alert" }, `Hidden from others: ${model.hidden_reason}`)
      : null,
    model.cover_url ? h("img", { class: "cover", src: model.cover_url, alt: `${model.name} cover` }) : null,
    facts(model), description, snippetLine(model),
    me ? h("p", {}, h("a", { href: model.download_url, download: `${model.name}.safetensors` },
      `Download ${model.name}.safetensors`))
      : h("p", {}, h("a", { href: "#/sign-in" }, "Sign in"), " to download or test it."),
    model.showcase.length ? h("h2", {}, "Showcase") : null, model.showcase.length ? showcase(model, owner) : null,
    h("h2", {}, "Previews"), h("div", { class: "chips" }, model.previews.map((url, i) =>
      zoomable(h("img", { src: url, alt: `preview ${i + 1}`, style: "width:160px" })))),
    parameters,
    me ? testForm(model) : null,
    me && !owner ? reportForm(model) : null,
    owner ? manage(model) : null, owner ? await pictures(model) : null, owner ? await reportsAbout(model) : null);
}
