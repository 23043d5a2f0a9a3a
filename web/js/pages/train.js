// Training form: basic (preset card × base model, repeats, epochs, preview prompt) or pro (every parameter),
// with a live step count and time estimate, pre-flight errors next to their fields, start now or tonight.
import { get, post, postForm } from "../api.js";
import { clock, duration, field, h, mount, showErrors, splitList } from "../dom.js";

function paramInput(spec) {
  const name = spec.key;
  if (spec.types.includes("boolean")) return h("input", { type: "checkbox", name });
  if (spec.choices) {
    return h("select", { name }, spec.nullable && h("option", { value: "" }, "(none)"),
      spec.choices.map((c) => h("option", { value: String(c) }, String(c))));
  }
  if (spec.types.includes("number") || spec.types.includes("integer")) {
    return h("input", { type: "number", name, step: spec.types.includes("integer") ? 1 : "any",
                        min: spec.minimum, max: spec.maximum });
  }
  return h("input", { type: "text", name });
}

function setParam(spec, input, value) {
  if (input.type === "checkbox") input.checked = Boolean(value);
  else if (Array.isArray(value)) input.value = input.type === "number" ? value[0] : value.join(", ");
  else input.value = value === null || value === undefined ? "" : String(value);
}

function readParam(spec, input) {
  if (input.type === "checkbox") return input.checked;
  if (input.value === "") return spec.nullable ? null : spec.types.includes("array") ? [] : undefined;
  if (spec.choices) return spec.choices.find((c) => String(c) === input.value);
  if (input.type === "number") return Number(input.value);
  if (spec.types.includes("array")) return splitList(input.value);
  return input.value;
}

// A dataset's name as a LoRA name (file name and <lora:name:weight> tag): "My set!" → "My_set".
const loraName = (text) => text.replace(/[^\w.-]+/g, "_").replace(/^[^A-Za-z0-9]+|[_.-]+$/g, "") || "lora";
const themeLabel = (theme) => (theme === "2_5d" ? "2.5D" : theme.replace(/_/g, " "));

export async function trainPage({ datasetId, fromJob }) {
  const job = fromJob ? await get(`/jobs/${fromJob}`) : null;
  datasetId = datasetId || job.dataset_id;
  const [dataset, models, presets, catalog, types] = await Promise.all([get(`/datasets/${datasetId}`),
    get("/base-models"), get("/presets"), get("/params"), get("/network-types")]);
  const specs = catalog.flatMap((g) => g.params);
  const themes = [...new Set(presets.map((p) => p.theme))];
  const firstTheme = themes.includes("standard") ? "standard" : themes[0];

  const name = h("input", { type: "text", name: "name", required: true, value: job ? job.name : loraName(dataset.name) });
  // a retrain keeps its base; a new job starts on a base of the family the dataset was cropped for
  const chosen = job ? job.base_model : models.find((m) => m.family === dataset.crop_family)?.name;
  const model = h("select", { name: "base_model" }, models.map((m) => h("option", { value: m.name, selected: m.name === chosen },
    `${m.name} (${m.family}, ${m.resolution}px)`)));
  const mode = job ? "pro" : "basic";
  const modeInputs = ["basic", "pro"].map((m) => h("label", { style: "display:inline;margin-right:1rem" },
    h("input", { type: "radio", name: "mode", value: m, checked: m === mode }), ` ${m === "basic" ? "Basic" : "Pro"}`));
  const cards = h("div", { class: "cards", role: "radiogroup", "aria-label": "Preset" }, themes.map((theme) =>
    h("label", { class: "preset" }, h("input", { type: "radio", name: "preset", value: theme, checked: theme === firstTheme }),
      ` ${themeLabel(theme)}`)));
  const repeats = h("input", { type: "number", name: "repeats", min: 1, max: 1000, value: dataset.default_repeats });
  const epochs = h("input", { type: "number", name: "max_train_epochs", min: 1, max: 1000, value: job ? job.params.max_train_epochs ?? 10 : 10 });
  const prompt = h("input", { type: "text", name: "sample_prompts", size: 60,
                              value: job ? (job.sample_prompts[0] || "") : "" });
  const basic = h("div", {}, h("h2", {}, "Preset"), cards, h("div", { class: "row" }, field("Epochs", epochs)));
  const paramFields = new Map();
  const groupSets = catalog.map((group) => [group, h("fieldset", {}, h("legend", {}, group.group),
    h("div", { class: "params" }, group.params.map((spec) => {
      const element = field(spec.key, paramInput(spec), spec.help);
      paramFields.set(spec.key, element);
      return element;
    })))]);
  // A plain choice of network type, written into network_module and network_args as sd-scripts users write them.
  const networkType = h("select", { name: "network_type" }, types.map((t) => h("option", { value: t.name }, t.label)));
  const caveat = h("p", { class: "hint", "aria-label": "How tools apply it" });
  const showCaveat = () => (caveat.textContent = types.find((t) => t.name === networkType.value)?.caveat || "");
  const typeField = field("Network type", networkType,
    "LoHa and LoKr capture more per file size; DoRA learns direction and magnitude apart (LyCORIS types).");
  typeField.append(caveat);
  paramFields.get("network_dim").before(typeField);
  const pro = h("div", {}, groupSets.map(([, set]) => set));
  // Pro mode shows only what applies to the chosen base model's family (FLUX's flow settings, SD's clip_skip …).
  const applies = (spec) => spec.families.includes(family());
  function showFamilyParams() {
    for (const [group, set] of groupSets) {
      for (const spec of group.params) paramFields.get(spec.key).hidden = !applies(spec);
      set.hidden = !group.params.some(applies);
    }
  }
  const importBox = h("div", { role: "status" });
  const configFile = h("input", { type: "file", name: "config_file", accept: ".toml,.json" });
  const datasetFile = h("input", { type: "file", name: "dataset_config_file", accept: ".toml" });
  async function importConfig() {
    if (!configFile.files.length) return;
    const upload = new FormData();
    upload.append("file", configFile.files[0]);
    if (datasetFile.files.length) upload.append("dataset_config", datasetFile.files[0]);
    try {
      const answer = await postForm("/jobs/import-config", upload);
      modeInputs.forEach((l) => { const i = l.querySelector("input"); i.checked = i.value === "pro"; });
      basic.hidden = true;
      pro.hidden = false;
      fillPro(answer.params);
      if (answer.sample_prompts.length) prompt.value = answer.sample_prompts[0];
      const notes = [...answer.problems.map((n) => `problem: ${n.key}: ${n.message}`),
        ...answer.unknown.map((n) => `not understood: ${n.message}`),
        ...answer.ignored.map((n) => `ignored: ${n.key}: ${n.message}`)];
      importBox.replaceChildren(h("p", {}, `${Object.keys(answer.params).length} parameters read from a ` +
        `${answer.format} file` + (answer.default_repeats ? `; its dataset used ${answer.default_repeats} repeats` : "")),
      h("ul", { class: "muted" }, notes.map((n) => h("li", {}, n))));
      saveDraft();
      later();
    } catch (error) {
      importBox.replaceChildren(h("p", { class: "error" }, error.message));
    }
  }
  const importPanel = h("details", { class: "card" }, h("summary", {}, "Import parameters from sd-scripts, kohya_ss or LoRA_Easy"),
    h("div", { class: "row" }, field("Config file (.toml or .json)", configFile),
      field("dataset_config (.toml, optional)", datasetFile),
      h("button", { type: "button", class: "secondary", onclick: importConfig }, "Read parameters")), importBox);
  const estimateBox = h("p", { role: "status", "aria-live": "polite" });
  const tonight = h("button", { type: "submit", value: "tonight", class: "secondary" }, "Start tonight (off-peak)");
  const warnings = h("ul", { class: "muted" });
  const memoryBox = h("p", { class: "muted", "aria-label": "GPU memory" });
  const box = h("p", { class: "error", role: "alert" });

  const currentMode = () => modeInputs.map((l) => l.querySelector("input")).find((i) => i.checked).value;
  const preset = () => cards.querySelector("input:checked").value;
  const family = () => models.find((m) => m.name === model.value).family;
  function fillPro(values) {
    for (const spec of specs) {
      setParam(spec, pro.querySelector(`[name="${spec.key}"]`), spec.key in values ? values[spec.key] : spec.default);
    }
    networkType.value = typeOf({ network_module: values.network_module, network_args: values.network_args });
    showCaveat();
    if (values.max_train_epochs) epochs.value = values.max_train_epochs; // an imported or retrained job's epochs
  }
  // the preset as a job runs it: its values, then the server's own settings for this base model
  const presetValues = () => ({ ...(presets.find((p) => p.theme === preset() && p.family === family()) || {}).params,
    ...models.find((m) => m.name === model.value).train_overrides });
  const argName = (arg) => arg.split("=")[0].trim();
  function typeOf(values) {
    const args = values.network_args || [];
    const arg = (key) => ((args.find((a) => argName(a) === key) || "").split("=")[1] || "").trim().toLowerCase();
    if (values.network_module !== "lycoris.kohya") return "lora";
    if (arg("dora_wd") === "true") return "dora";
    return { loha: "loha", lokr: "lokr" }[arg("algo")] || "lycoris_lora";
  }
  function applyType() {
    const chosen = types.find((t) => t.name === networkType.value);
    const moduleInput = pro.querySelector('[name="network_module"]');
    moduleInput.value = chosen.lycoris ? "lycoris.kohya" : (presetValues().network_module || "networks.lora");
    const argsInput = pro.querySelector('[name="network_args"]');
    const kept = splitList(argsInput.value).filter((a) => !["algo", "dora_wd"].includes(argName(a)));
    argsInput.value = [...chosen.args, ...kept].join(", ");
    showCaveat();
  }
  fillPro(job ? job.params : { ...presetValues(), max_train_epochs: Number(epochs.value) });
  showFamilyParams();

  function body(startAfter) {
    const common = { dataset_id: datasetId, base_model: model.value, name: name.value, repeats: Number(repeats.value) || null,
                     sample_prompts: prompt.value.trim() ? [prompt.value.trim()] : [], start_after: startAfter };
    if (currentMode() === "basic") {
      return { ...common, mode: "basic", preset: preset(), params: { max_train_epochs: Number(epochs.value) } };
    }
    const params = {};
    for (const spec of specs.filter(applies)) {
      const value = readParam(spec, pro.querySelector(`[name="${spec.key}"]`));
      if (value !== undefined) params[spec.key] = value;
    }
    return { ...common, mode: "pro", preset: null, params };
  }

  // What is typed is kept, per dataset (or per job for a retrain), through navigation and reloads until the job starts.
  const draftKey = `lorabake.train.${job ? `job.${job.id}` : `dataset.${datasetId}`}`;
  function saveDraft() {
    const values = {};
    for (const control of form.elements) {
      if (!control.name || control.type === "file" || (control.type === "radio" && !control.checked)) continue;
      values[control.name] = control.type === "checkbox" ? control.checked : control.value;
    }
    localStorage.setItem(draftKey, JSON.stringify(values));
  }
  function restoreDraft() {
    let values = null;
    try { values = JSON.parse(localStorage.getItem(draftKey)); } catch { /* an unreadable draft is dropped */ }
    if (!values || !models.some((m) => m.name === values.base_model)) return;
    for (const control of form.elements) {
      if (!control.name || !(control.name in values)) continue;
      if (control.type === "radio") control.checked = control.value === values[control.name];
      else if (control.type === "checkbox") control.checked = Boolean(values[control.name]);
      else if (control.type !== "file") control.value = values[control.name];
    }
    showFamilyParams();
    showCaveat();
    basic.hidden = currentMode() !== "basic";
    pro.hidden = !basic.hidden;
  }

  // the price is held when the job is queued; epochs it does not train come back
  const priceText = (r) => (r.price ? `. Price: ${r.price} credits (${r.epoch_price} an epoch); you have ` +
    `${r.balance}${r.price > r.balance ? ": not enough" : ""}` : "");
  let timer = null;
  async function estimate() {
    try {
      const result = await post("/jobs/estimate", body(null));
      // as the user counts it: images × repeats (+ reg) per epoch, ÷ batch and accumulation, × epochs
      const reg = result.reg_samples ? ` + ${result.reg_samples} reg` : "";
      const accumulation = (result.gradient_accumulation_steps > 1 ? ` ÷ ${result.gradient_accumulation_steps} accumulated` : "") +
        (result.gpus > 1 ? ` ÷ ${result.gpus} GPUs` : "");
      estimateBox.textContent = `${result.total_steps} steps: ${result.train_images} images × repeats = ` +
        `${result.train_samples} samples${reg} per epoch ÷ batch ${result.batch_size}${accumulation} = ` +
        `${result.steps_per_epoch} steps × ${result.epochs} epochs, ` + (result.estimated_seconds == null
          ? "time: no measurement on this server yet (the first finished run teaches it)"
          : `about ${duration(result.estimated_seconds)}`) + priceText(result);
      // large models: the GPU memory the run needs (an estimate from the model's size and these settings)
      memoryBox.textContent = result.memory ? `GPU memory: ${result.memory.summary}` : "";
      // basic mode shows no parameter names, so its warnings are said in the form's words
      const plain = currentMode() === "basic";
      warnings.replaceChildren(...result.warnings.map((w) => h("li", {},
        plain && w.plain ? w.plain : `${w.field}: ${w.message}`)));
      tonight.textContent = `Start tonight (off-peak, ${clock(result.tonight_starts_at)})`;
      // basic mode says in its own words what it cannot place next to a field it shows
      const worded = result.errors.filter((e) => plain && e.plain);
      showErrors(form, box, { fields: Object.fromEntries(result.errors.filter((e) => !worded.includes(e))
        .map((e) => [e.field, e.message])), message: "", notes: worded.map((e) => e.plain) });
    } catch (error) {
      showErrors(form, box, error);
    }
  }
  const later = () => { clearTimeout(timer); timer = setTimeout(estimate, 300); };

  async function start(startAfter) {
    try {
      const created = job
        ? await post(`/jobs/${job.id}/retrain`, { ...body(startAfter), dataset_id: undefined })
        : await post("/jobs", body(startAfter));
      localStorage.removeItem(draftKey);
      location.hash = `#/jobs/${created.id}`;
    } catch (error) {
      showErrors(form, box, error);
    }
  }

  // the one setting both modes show is one value: what is typed in either is in both, so switching changes nothing
  const syncEpochs = (e) => {
    const proEpochs = pro.querySelector('[name="max_train_epochs"]');
    if (e.target === epochs) proEpochs.value = epochs.value;
    else if (e.target === proEpochs) epochs.value = proEpochs.value;
  };
  const form = h("form", { class: "card", oninput: (e) => { syncEpochs(e); saveDraft(); later(); }, onchange: (e) => {
    // another preset or base model refills pro mode, but the epochs the user chose stay
    if (e.target.name === "preset" || e.target.name === "base_model") fillPro({ ...presetValues(), max_train_epochs: Number(epochs.value) });
    if (e.target.name === "network_type") applyType();
    if (e.target.name === "base_model") showFamilyParams();
    if (e.target.name === "mode") { basic.hidden = currentMode() !== "basic"; pro.hidden = !basic.hidden; }
    saveDraft();
    later();
  }, onsubmit: (e) => { e.preventDefault(); start(e.submitter && e.submitter.value === "tonight" ? "tonight" : null); } },
  h("div", { class: "row" }, field("LoRA name", name, "Also the file name and the <lora:name:weight> tag."),
    field("Base model", model), h("div", {}, h("span", { class: "muted" }, "Mode"), h("div", {}, modeInputs))),
  field("Repeats per image", repeats, "How often each image is seen per epoch (images with their own repeats " +
    "keep them); saved as the dataset's default when the job starts."),
  basic, pro, field("Preview prompt", prompt, "Rendered after each epoch, e.g. sks, portrait --s 20 --d 1 (--s steps, --d seed, --n negative)."),
  estimateBox, memoryBox, warnings, box,
  h("div", { class: "row" }, h("button", { type: "submit", value: "now" }, "Start now"),
    tonight));
  basic.hidden = mode !== "basic";
  pro.hidden = mode === "basic";
  restoreDraft();
  mount(h("h1", {}, job ? `Retrain ${job.name}` : `Train on ${dataset.name}`), importPanel, form);
  estimate();
}
