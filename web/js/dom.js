// A small element builder and the helpers every page shares.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style") el.setAttribute("style", value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Every view's title is its heading, so tabs and history read "Train on circles · lorabake".
export function mount(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children.filter((child) => child !== null && child !== undefined && child !== false));
  const heading = main.querySelector("h1");
  document.title = heading ? `${heading.textContent} · lorabake` : "lorabake";
  return main;
}

// Shows an API error next to what caused it: fields by name inside `form`, the rest in `box`; null clears them.
export function showErrors(form, box, error) {
  for (const old of form.querySelectorAll(".field-error")) old.remove();
  if (!error) {
    box.textContent = "";
    return;
  }
  const fields = error.fields || {};
  const unplaced = [];
  for (const [field, message] of Object.entries(fields)) {
    // the input on show; a field the form hides now (pro mode's, in basic mode) is said above the buttons
    const input = [...form.querySelectorAll(`[name="${CSS.escape(field)}"]`)].find((el) => el.offsetParent !== null);
    if (input) input.closest(".field, label").append(h("span", { class: "error field-error", role: "alert" }, message));
    else unplaced.push(field ? `${field}: ${message}` : message);
  }
  const general = unplaced.length || !Object.keys(fields).length ? [unplaced.join("; ") || error.message] : [];
  box.textContent = [...(error.notes || []), ...general].filter(Boolean).join(" ");
}

export const splitList = (text) => text.split(",").map((item) => item.trim()).filter(Boolean);

// A moment in the viewer's own time zone: "01:00" today, "Mon 01:00" on another day.
export function clock(iso) {
  const when = new Date(iso);
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return when.toDateString() === new Date().toDateString() ? time
    : `${when.toLocaleDateString([], { weekday: "short" })} ${time}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "unknown";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

let fieldIds = 0;

// A labelled control; the hint is its description, not part of its name (screen readers read it after).
export function field(label, input, hint) {
  const control = input.matches("input, select, textarea") ? input : input.querySelector("input, select, textarea");
  control.id = control.id || `field-${++fieldIds}`;
  const hintBox = hint && h("span", { class: "hint", id: `${control.id}-hint` }, hint);
  if (hintBox) control.setAttribute("aria-describedby", hintBox.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), input, hintBox);
}

// An image inside a button that opens it full size in a dialog (Escape or a click closes it).
let zoomDialog = null;
export function zoomable(img) {
  const open = () => {
    if (!zoomDialog) {
      zoomDialog = h("dialog", { class: "zoom", "aria-label": "Zoomed image", onclick: () => zoomDialog.close() });
      document.body.append(zoomDialog);
    }
    zoomDialog.replaceChildren(h("img", { src: img.src, alt: img.alt }), h("p", {}, img.alt));
    zoomDialog.showModal();
  };
  return h("button", { type: "button", class: "zoom-trigger", onclick: open }, img);
}

// Panels behind a row of tabs, one shown at a time (arrow keys move between tabs): several tools take the room of one.
// A panel given as [name, element, onShow] is told each time its tab is opened (to show what changed meanwhile).
let tabIds = 0;
export function tabs(label, panels) {
  const list = h("div", { role: "tablist", "aria-label": label, class: "tabs" });
  const buttons = panels.map(([name, panel], i) => {
    const id = `tab-${++tabIds}`;
    panel.setAttribute("role", "tabpanel");
    panel.setAttribute("aria-labelledby", id);
    return h("button", { type: "button", role: "tab", id, class: "tab", onclick: () => show(i),
      onkeydown: (e) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
        if (!step) return;
        const next = (i + step + panels.length) % panels.length;
        show(next);
        buttons[next].focus();
      } }, name);
  });
  function show(index) {
    buttons.forEach((b, i) => {
      b.setAttribute("aria-selected", String(i === index));
      b.tabIndex = i === index ? 0 : -1;
      panels[i][1].hidden = i !== index;
    });
    if (panels[index][2]) panels[index][2]();
  }
  list.append(...buttons);
  show(0);
  return h("div", { class: "tabbed" }, list, panels.map(([, panel]) => panel));
}
