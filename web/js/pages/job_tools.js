// What one does with a job's epochs besides testing them: the epoch × weight sweep (choose epochs and weights,
// render the grid as one task with progress, look at any cell full size, download the labelled PNG; the newest
// sweep shows when the page opens), continuing the training for more epochs, and a plain LoRA copy of an epoch.
import { get, post } from "../api.js";
import { field, h, splitList, zoomable } from "../dom.js";

const POLL_MS = 700;

export function sweepPanel(job) {
  const epochChoices = h("div", { class: "chips", role: "group", "aria-label": "Epochs to compare" });
  const weights = h("input", { type: "text", name: "weights", value: "0.2, 0.4, 0.6, 0.8, 1.0" });
  const prompt = h("input", { type: "text", name: "prompt", value: (job.sample_prompts[0] || job.name).replace(/<lora:[^>]*>/g, "").trim() });
  const seed = h("input", { type: "number", name: "seed", min: 0, value: 0 });
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Sweep progress", hidden: true });
  const status = h("p", { class: "muted", role: "status" });
  const result = h("div", { class: "sweep" });
  const button = h("button", { type: "submit" }, "Render grid");
  let timer = null;

  function show(sweep) {
    const head = h("tr", {}, h("th", {}, "Epoch"), h("th", {}, "no LoRA"), sweep.weights.map((w) => h("th", {}, `weight ${w}`)));
    const rows = sweep.cells.map((row, r) => h("tr", {}, h("th", {}, sweep.epochs[r]), row.map((url, c) =>
      h("td", {}, zoomable(h("img", { src: url, alt: `epoch ${sweep.epochs[r]}, ${c ? `weight ${sweep.weights[c - 1]}` : "no LoRA"}` }))))));
    result.replaceChildren(h("table", { class: "compare", "aria-label": "Epoch × weight grid" }, h("thead", {}, head), h("tbody", {}, rows)),
      sweep.grid_url && h("a", { href: sweep.grid_url, download: "sweep.png" }, "Download the grid (PNG with labels)"));
  }

  async function follow(sweep) {
    clearTimeout(timer);
    bar.hidden = sweep.status === "succeeded" || sweep.status === "failed";
    bar.value = sweep.total ? sweep.done / sweep.total : 0;
    button.disabled = !bar.hidden;
    if (sweep.status === "failed") {
      status.textContent = sweep.error;
      status.className = "error";
    } else if (sweep.status === "succeeded") {
      status.textContent = `"${sweep.prompt}", seed ${sweep.seed}: ${sweep.total} images`;
      status.className = "muted";
      show(sweep);
    } else {
      status.textContent = sweep.status === "queued" ? `Queued: ${sweep.waiting_for || "waiting for the image worker"}`
        : `Rendering image ${sweep.done + 1} of ${sweep.total}…`;
      timer = setTimeout(async () => follow(await get(`/sweeps/${sweep.id}`)), POLL_MS);
    }
  }

  const form = h("form", { class: "card", "aria-label": "Compare epochs and weights", onsubmit: async (e) => {
    e.preventDefault();
    const epochs = [...epochChoices.querySelectorAll("input:checked")].map((i) => Number(i.value));
    try {
      await follow(await post(`/jobs/${job.id}/sweeps`, { epochs, weights: splitList(weights.value).map(Number),
                                                         prompt: prompt.value, seed: Number(seed.value) }));
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  } }, h("h2", {}, "Compare epochs × LoRA weights"),
  h("p", { class: "muted" }, "Same prompt and seed in every cell, plus the base model without the LoRA."),
  epochChoices, h("div", { class: "row" }, field("Weights (comma-separated)", weights), field("Prompt", prompt),
    field("Seed", seed), button), bar, status, result);

  const unchecked = new Set(); // epochs the user left out; new epochs come in checked
  epochChoices.addEventListener("change", (e) => {
    const n = Number(e.target.value);
    e.target.checked ? unchecked.delete(n) : unchecked.add(n);
  });
  form.setEpochs = (epochs) => {
    epochChoices.replaceChildren(...epochs.map((e) => h("label", { class: "chip" },
      h("input", { type: "checkbox", value: e.n, checked: !unchecked.has(e.n) }), ` epoch ${e.n}`)));
    if (!bar.hidden) return;
    button.disabled = !epochs.length;
    if (!epochs.length) status.textContent = "Nothing to compare yet: epochs appear here as they are stored.";
    else if (status.textContent.startsWith("Nothing to compare")) status.textContent = "";
  };
  form.load = async () => {
    const [latest] = await get(`/jobs/${job.id}/sweeps`);
    if (latest) await follow(latest);
  };
  form.stop = () => clearTimeout(timer);
  return form;
}

const FLAT = ["constant", "constant_with_warmup", "adafactor"];

// "Continue for N more epochs" on a succeeded or canceled job, with what each schedule choice does to this job's
// learning rate.
export function continuePanel(job, onContinued) {
  const epochs = h("input", { type: "number", name: "epochs", min: 1, max: 1000, value: 2 });
  const scheduler = job.params.lr_scheduler || "constant";
  const flat = FLAT.includes(scheduler);
  const choices = [
    ["extend", "Extend the schedule", flat ? `The ${scheduler} rate stays as it is.`
      : `The ${scheduler} schedule is recomputed over all epochs: the rate steps back up to where a run of the new ` +
        "length would be now, then falls to its end."],
    ["restart", "Restart the schedule", flat ? `The ${scheduler} rate stays as it is (both choices train the same).`
      : `The ${scheduler} schedule runs again over the added epochs only: the rate returns to its peak, then falls ` +
        "(like a cosine restart). Good for going on from an epoch that was nearly right."]];
  const radios = choices.map(([value, label, why], i) => h("label", {},
    h("input", { type: "radio", name: "schedule", value, checked: i === 0 }), ` ${label}: `, h("span", { class: "muted" }, why)));
  const status = h("p", { role: "status", class: "muted" });
  return h("form", { class: "card", "aria-label": "Continue training", onsubmit: async (e) => {
    e.preventDefault();
    const schedule = radios.map((r) => r.querySelector("input")).find((i) => i.checked).value;
    try {
      await post(`/jobs/${job.id}/continue`, { epochs: Number(epochs.value), schedule });
      onContinued();
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  } }, h("h2", {}, "Continue training"),
  h("p", { class: "muted" }, "From the last stored epoch, with its optimizer state: the new epochs keep numbering."),
  field("More epochs", epochs), h("fieldset", {}, h("legend", {}, "Learning-rate schedule"), radios),
  h("button", { type: "submit" }, "Continue"), status);
}

// An epoch as a plain LoRA of a chosen rank: DoRA, LoHa and LoKr files are applied differently (or not at all) by
// some tools; the copy is the same update as a plain LoRA, with what the rank leaves out said.
export function plainLoraPanel(job, caveat) {
  const epoch = h("select", { name: "epoch" });
  const rank = h("input", { type: "number", name: "rank", min: 1, max: 1024, value: job.params.network_dim || 32 });
  const status = h("p", { class: "muted", role: "status" });
  const link = h("p");
  const button = h("button", { type: "submit" }, "Make a plain LoRA");
  const percent = (x) => `${(x * 100).toFixed(x < 0.01 ? 2 : 1)} %`;
  const form = h("form", { class: "card", "aria-label": "Plain LoRA copy", onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    link.replaceChildren();
    status.className = "muted";
    try {
      let copy = await post(`/jobs/${job.id}/epochs/${epoch.value}/plain-lora`, { rank: Number(rank.value) });
      while (!["succeeded", "failed"].includes(copy.status)) {
        status.textContent = copy.status === "queued" && copy.waiting_for ? `Queued: ${copy.waiting_for}` : "Converting…";
        await new Promise((r) => setTimeout(r, POLL_MS));
        copy = await get(`/plain-loras/${copy.id}`);
      }
      if (copy.status === "failed") throw new Error(copy.error);
      const report = copy.report;
      status.textContent = `Epoch ${copy.epoch} as a plain LoRA of rank ${report.rank} over ${report.modules} modules: ` +
        `it leaves out ${percent(report.relative_error)} of the update (the most, ${percent(report.worst_error)}, ` +
        `in ${report.worst_module}). A higher rank leaves out less.`;
      link.replaceChildren(h("a", { href: copy.download_url, download: "" },
        `Download epoch ${copy.epoch} as a plain LoRA (rank ${report.rank})`));
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    } finally { button.disabled = false; }
  } }, h("h2", {}, "Plain LoRA copy"), h("p", { class: "hint" }, caveat),
  h("div", { class: "row" }, field("Epoch", epoch), field("Rank", rank), button), status, link);
  form.setEpochs = (epochs) => {
    const picked = epoch.value;
    epoch.replaceChildren(...epochs.map((e) => h("option", { value: e.n }, `epoch ${e.n}`)));
    if (epochs.length) epoch.value = epochs.some((e) => String(e.n) === picked) ? picked : epochs[epochs.length - 1].n;
    button.disabled = !epochs.length;
  };
  return form;
}
