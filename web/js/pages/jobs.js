// The queue, and a job page that follows the job live over Server-Sent Events.
import { rendered } from "../generation.js";
import { del, get, post, getAll } from "../api.js";
import { lineChart } from "../chart.js";
import { clock, duration, field, h, mount, zoomable } from "../dom.js";
import { continuePanel, plainLoraPanel, sweepPanel } from "./job_tools.js";
import { limitsLine } from "./settings.js";
import { notifyToggle, seen } from "../notify.js";

// When a job starts and ends, as its owner reads it: a time of day for a scheduled job, place and wait for a
// queued one (how long it then takes, not a second "ends in" that repeats the wait), time left for a running one.
function timing(j, limits) {
  if (j.finished) return "";
  if (j.status === "scheduled" && j.start_after) return `starts ${clock(j.start_after)} (off-peak)`;
  if (j.status === "queued" && limits && limits.running >= limits.max_running) {
    return `place ${j.queue_position ?? "?"}, waits for one of your ${limits.running} training jobs to end ` +
      `(${limits.max_running} at once per user)`;
  }
  if (j.status === "queued" && j.waiting_for) return `place ${j.queue_position ?? "?"}, ${j.waiting_for}`;
  if (j.status === "queued") {
    const takes = j.eta_s != null && j.starts_in_s != null ? `, then takes about ${duration(j.eta_s - j.starts_in_s)}` : "";
    const starts = j.starts_in_s != null ? `starts in ${duration(j.starts_in_s)}` : "starts when the jobs ahead end";
    return `place ${j.queue_position ?? "?"}, ${starts}${takes}`;
  }
  if (j.total_steps && j.step >= j.total_steps) return "finishing: storing the last epoch and rendering its previews";
  if (j.eta_s == null) return j.step ? "ends: still measuring its speed" : "starting: loading the model and the images";
  return `ends in ${duration(j.eta_s)}`;
}

const REFRESH_MS = 5000;

// The queue, refreshed every few seconds while any job is still waiting or running.
export async function jobsPage() {
  const body = h("tbody");
  const table = h("table", { class: "stack" }, h("thead", {}, h("tr", {}, ["Name", "Status", "Progress", "When"].map((t) => h("th", {}, t)))),
    body);
  const empty = h("p", { class: "muted" }, "No jobs yet: open a dataset and train a LoRA on it.");
  const load = h("p", { class: "muted", role: "status" });
  let timer = null;
  async function draw() {
    const [jobs, limits] = await Promise.all([getAll("/jobs"), get("/me/limits")]);
    load.textContent = limitsLine(limits);
    seen(jobs);
    body.replaceChildren(...jobs.map((j) => h("tr", {},
      h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.name)), h("td", { "data-label": "Status" }, j.status),
      h("td", { "data-label": "Progress" }, `${Math.round(j.progress * 100)} %`),
      h("td", { "data-label": "When" }, timing(j, limits)))));
    table.hidden = !jobs.length;
    empty.hidden = Boolean(jobs.length);
    if (jobs.some((j) => !j.finished)) timer = setTimeout(() => draw().catch(() => null), REFRESH_MS);
  }
  await draw();
  mount(h("h1", {}, "Jobs"), load, notifyToggle(), table, empty);
  return () => clearTimeout(timer);
}

// The parameters the job was trained with, as a list one can read (and compare with another job's).
function parameters(job) {
  const rows = Object.entries(job.params).filter(([, v]) => v !== null && v !== false && !(Array.isArray(v) && !v.length))
    .sort(([a], [b]) => a.localeCompare(b));
  return h("details", { class: "card" }, h("summary", {}, `Parameters (${rows.length} set)`),
    h("table", { "aria-label": "Parameters" }, h("tbody", {}, rows.map(([k, v]) =>
      h("tr", {}, h("th", {}, k), h("td", {}, Array.isArray(v) ? v.join(", ") : String(v)))))));
}

function epochCard(job, epoch, onTest) {
  return h("section", { class: "card epoch", "aria-label": `Epoch ${epoch.n}` },
    h("h2", {}, `Epoch ${epoch.n}`),
    h("p", { class: "muted" }, `loss ${epoch.loss?.toFixed(4) ?? "?"}` +
      (epoch.validation_loss != null ? ` · validation ${epoch.validation_loss.toFixed(4)}` : "") +
      ` · ${(epoch.size / 1e6).toFixed(2)} MB`),
    h("div", { class: "chips" }, epoch.previews.map((url, i) => zoomable(h("img", { src: url, alt: `epoch ${epoch.n} preview ${i + 1}`, loading: "lazy" })))),
    h("div", { class: "row" },
      h("a", { href: epoch.download_url, download: `${job.name}-${String(epoch.n).padStart(6, "0")}.safetensors` }, "Download"),
      h("button", { type: "button", class: "secondary", onclick: () => onTest(epoch.n) }, "Test"),
      h("a", { href: `#/jobs/${job.id}/publish/${epoch.n}` }, "Publish")));
}

function comparison(job, epochs) {
  const perPrompt = job.params.sample_images_per_prompt || 1;
  if (!job.sample_prompts.length || !epochs.some((e) => e.previews.length)) return null;
  return h("table", { class: "compare" },
    h("thead", {}, h("tr", {}, h("th", {}, "Epoch"), job.sample_prompts.map((p) => h("th", {}, p)))),
    h("tbody", {}, epochs.map((e) => h("tr", {}, h("th", {}, e.n), job.sample_prompts.map((p, i) =>
      h("td", {}, e.previews[i * perPrompt] ? zoomable(h("img", { src: e.previews[i * perPrompt], alt: `epoch ${e.n}: ${p}` })) : ""))))));
}

// Two epochs' previews side by side, large, to judge the difference between them.
function compareTwo(epochs) {
  const withPreviews = epochs.filter((e) => e.previews.length);
  if (withPreviews.length < 2) return null;
  const pick = (label, n) => h("select", { "aria-label": label }, withPreviews.map((e) => h("option", { value: e.n, selected: e.n === n }, `epoch ${e.n}`)));
  const left = pick("Left epoch", withPreviews[withPreviews.length - 2].n);
  const right = pick("Right epoch", withPreviews[withPreviews.length - 1].n);
  const sides = h("div", { class: "compare-two" });
  const column = (select) => {
    const epoch = withPreviews.find((e) => e.n === Number(select.value));
    return h("div", {}, h("h3", {}, `Epoch ${epoch.n}`), epoch.previews.map((url, i) =>
      zoomable(h("img", { src: url, alt: `epoch ${epoch.n} preview ${i + 1}` }))));
  };
  const draw = () => sides.replaceChildren(column(left), column(right));
  left.addEventListener("change", draw);
  right.addEventListener("change", draw);
  draw();
  return h("section", { class: "card", "aria-label": "Two epochs side by side" }, h("h2", {}, "Two epochs side by side"),
    h("div", { class: "row" }, field("Left", left), field("Right", right)), sides);
}

function testPanel(job) {
  const epoch = h("select", { "aria-label": "Epoch" });
  const prompt = h("input", { type: "text", size: 60, value: `${job.sample_prompts[0] || job.name} <lora:${job.name}:0.8>` });
  const weight = h("input", { type: "range", min: 0, max: 1.5, step: 0.05, value: 0.8 });
  const weightText = h("output", {}, "0.8");
  const result = h("div", { class: "generated chips", "aria-live": "polite" });
  const status = h("p", { class: "muted", role: "status" });
  const syncPrompt = () => {
    weightText.textContent = weight.value;
    prompt.value = prompt.value.replace(/<lora:([^:>]+):[^>]*>/, `<lora:$1:${weight.value}>`);
  };
  weight.addEventListener("input", syncPrompt);
  const run = async (e) => {
    e.preventDefault();
    status.textContent = "Rendering…";
    status.className = "muted";
    try {
      const gen = await rendered(await post(`/jobs/${job.id}/epochs/${epoch.value}/generate`,
        { prompt: prompt.value, weight: Number(weight.value) }), status);
      status.textContent = `Epoch ${epoch.value}: done` + (gen.notes.length ? ` (${gen.notes.join("; ")})` : "");
      result.prepend(...gen.images.map((url) => h("img", { src: url, alt: `test image of epoch ${epoch.value}` })));
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
    }
  };
  const form = h("form", { class: "card", onsubmit: run, "aria-label": "Test an epoch" }, h("h2", {}, "Test an epoch"),
    h("div", { class: "row" }, field("Epoch", epoch), field("Prompt (accepts <lora:name:weight>)", prompt),
      field("LoRA weight", h("span", {}, weight, " ", weightText)), h("button", { type: "submit" }, "Generate")),
    status, result);
  let picked = null; // the newest epoch until the user picks one
  epoch.addEventListener("change", () => (picked = epoch.value));
  const generate = form.querySelector("button[type=submit]");
  form.setEpochs = (epochs) => {
    epoch.replaceChildren(...epochs.map((e) => h("option", { value: e.n }, `epoch ${e.n}`)));
    if (epochs.length) epoch.value = picked ?? epochs[epochs.length - 1].n;
    generate.disabled = !epochs.length;
    if (!epochs.length) status.textContent = "Nothing to test yet: the first epoch appears here when it is stored.";
    else if (status.textContent.startsWith("Nothing to test")) status.textContent = "";
  };
  form.pick = (n) => {
    picked = epoch.value = String(n);
    prompt.focus();
  };
  return form;
}

export async function jobPage(jobId) {
  let job = await get(`/jobs/${jobId}`);
  const history = [...job.history];
  const title = h("h1", {}, job.name);
  const statusLine = h("p", { role: "status" });
  const bar = h("progress", { max: 1, value: job.progress, "aria-label": "Training progress" });
  const charts = h("div", { class: "charts" });
  const log = h("pre", { class: "log", "aria-label": "Log" }, job.log_tail.join("\n"));
  // a job that has not started has no chart and no log yet: say so instead of empty boxes
  const notYet = h("p", { class: "muted" }, "Charts and the log appear when training starts.");
  const trained = h("div", {}, h("h2", {}, "Loss and learning rate"), charts, h("h2", {}, "Log"), log);
  const epochsBox = h("div", { class: "epochs" });
  const compareBox = h("div");
  const tester = testPanel(job);
  const sweeper = sweepPanel(job);
  // offered where the file's type is applied differently by some tools (the caveat says how)
  const caveat = (await get("/network-types")).find((t) => t.name === job.network_type)?.caveat;
  const plain = caveat ? plainLoraPanel(job, caveat) : null;
  let epochRows = [];
  const continuer = continuePanel(job, () => window.dispatchEvent(new HashChangeEvent("hashchange")));
  continuer.hidden = true;
  const actions = h("div", { class: "row" });
  const blocked = h("p", { class: "error", role: "alert", "aria-label": "Why the job stays" });

  function drawStatus() {
    const pct = Math.round(job.progress * 100);
    bar.value = job.progress;
    let text = `${job.status} · step ${job.step}/${job.total_steps} · ${pct} %`;
    if (!job.finished) text += ` · ${timing(job)}`;
    if (job.loss !== null && job.loss !== undefined) text += ` · loss ${job.loss.toFixed(4)}`;
    if (job.error) text += ` · ${job.error}`;
    if (job.webhook_status) text += ` · webhook ${job.webhook_status}`;
    if (job.epoch_price) text += ` · ${job.epoch_price} credits an epoch: ${job.charged_epochs} paid, ` +
      `${job.credits_held} held`;
    statusLine.textContent = text;
    statusLine.className = job.status === "failed" ? "error" : "";
    // validation loss per stored epoch, at the step where that epoch ended
    const perEpoch = job.epochs_total ? job.total_steps / job.epochs_total : 0;
    const validation = epochRows.filter((e) => e.validation_loss !== null && e.validation_loss !== undefined)
      .map((e) => [Math.round(e.n * perEpoch), e.validation_loss, `epoch ${e.n} validation loss`]);
    trained.hidden = !history.length && !log.textContent;
    notYet.hidden = !trained.hidden;
    charts.replaceChildren(lineChart("loss", history.map(([s, l]) => [s, l]), { smoothed: true, marks: validation,
      markLabel: "validation loss" }), lineChart("learning rate", history.map(([s, , lr]) => [s, lr])));
    actions.replaceChildren(...[
      !job.finished && h("button", { type: "button", class: "secondary", onclick: async () => {
        if (!confirm(`Cancel "${job.name}"? Epochs already stored are kept.`)) return;
        job = await post(`/jobs/${jobId}/cancel`);
        drawStatus();
      } }, "Cancel"),
      ["succeeded", "canceled"].includes(job.status) && h("a", { href: "#continue" , onclick: (e) => {
        e.preventDefault();
        continuer.hidden = false;
        continuer.querySelector("input").focus();
      } }, "Continue training…"),
      h("a", { href: `#/jobs/${jobId}/retrain` }, "Retrain with changes"),
      h("a", { href: `/api/v1/jobs/${jobId}/export-config`, download: "" }, "Export sd-scripts config"),
      job.finished && h("button", { type: "button", class: "secondary", onclick: async () => {
        if (!confirm(`Delete "${job.name}" with its epochs, previews and sweeps?`)) return;
        try {
          await del(`/jobs/${jobId}`);
          location.hash = "#/jobs";
        } catch (error) {
          if (error.status !== 409) { blocked.textContent = error.message; return; }
          // a published model of it must go first: say which, next to the button, with a link to its page
          const models = (await getAll("/models")).filter((m) => m.job_id === jobId);
          blocked.replaceChildren(models.length ? "Published as " : error.message, ...models.flatMap((m, i) =>
            [i ? ", " : "", h("a", { href: `#/models/${m.id}` }, m.name)]),
            models.length ? ": unpublish it on its page first (its job and files stay until then)." : "");
        }
      } }, "Delete job"), blocked].filter(Boolean));
  }

  async function drawEpochs() {
    const epochs = await getAll(`/jobs/${jobId}/epochs`);
    epochRows = epochs;
    drawStatus();
    epochsBox.replaceChildren(...epochs.map((e) => epochCard(job, e, (n) => { tester.pick(n); })));
    compareBox.replaceChildren(...[comparison(job, epochs), compareTwo(epochs)].filter(Boolean));
    tester.setEpochs(epochs);
    sweeper.setEpochs(epochs);
    if (plain) plain.setEpochs(epochs);
  }

  drawStatus();
  await drawEpochs();
  mount(title, statusLine, bar, actions, continuer, parameters(job), notYet, trained,
    h("h2", {}, "Epochs"), epochsBox, compareBox, tester, sweeper, plain);
  await sweeper.load();

  if (job.finished) return () => sweeper.stop();
  const events = new EventSource(`/api/v1/jobs/${jobId}/events`);
  events.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    Object.assign(job, p, { progress: p.total_steps ? p.step / p.total_steps : 0 });
    if (p.loss !== null && (!history.length || history[history.length - 1][0] < p.step)) history.push([p.step, p.loss, p.lr]);
    drawStatus();
  });
  events.addEventListener("epoch", () => drawEpochs());
  let firstLog = true; // the stream starts with the whole tail, which replaces what the page loaded
  events.addEventListener("log", (e) => {
    const lines = JSON.parse(e.data).lines.join("\n");
    log.textContent = firstLog ? lines : log.textContent + (log.textContent ? "\n" : "") + lines;
    firstLog = false;
    log.scrollTop = log.scrollHeight;
    drawStatus();
  });
  events.addEventListener("status", async () => {
    job = await get(`/jobs/${jobId}`);
    drawStatus();
    if (job.finished) { events.close(); await drawEpochs(); }
  });
  return () => { events.close(); sweeper.stop(); };
}
