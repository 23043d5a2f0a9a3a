// A grid of equal tiles that keeps only the rows near the viewport in the page, so 1000 images scroll and select as
// fast as 10. The page scrolls as usual: the box is as tall as all rows; the drawn rows sit at their own offset.
import { h } from "./dom.js";

const MIN_TILE = 120; // px, as .grid's minmax
const SPARE_ROWS = 3; // drawn above and below the viewport, so fast scrolling shows no gaps
const DRAW_ALL_UP_TO = 150; // items: below this the whole grid is in the page (cheap, and findable with Ctrl+F)

export function virtualGrid({ tile, key, label }) {
  const rows = h("div", { class: "grid-rows" });
  const box = h("div", { class: "grid virtual", role: "listbox", "aria-multiselectable": "true", "aria-label": label }, rows);
  let items = [], columns = 1, rowHeight = 0, drawn = "", frame = 0;

  function measure() {
    const gap = parseFloat(getComputedStyle(rows).rowGap) || 8;
    columns = Math.max(1, Math.floor((box.clientWidth + gap) / (MIN_TILE + gap)));
    rows.style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
    const sample = rows.firstElementChild;
    if (sample) rowHeight = sample.offsetHeight + gap;
  }

  function draw(force = false) {
    frame = 0;
    if (!box.isConnected) return;
    if (!box.clientWidth) return; // not laid out yet: the size observer draws it
    if (!rowHeight) measure();
    const rowCount = Math.ceil(items.length / columns);
    const top = box.getBoundingClientRect().top;
    const height = rowHeight || 200;
    const all = items.length <= DRAW_ALL_UP_TO;
    const first = all ? 0 : Math.max(0, Math.floor(-top / height) - SPARE_ROWS);
    const last = all ? rowCount : Math.min(rowCount, Math.max(first, Math.ceil((innerHeight - top) / height) + SPARE_ROWS));
    const span = `${first}:${last}:${columns}:${items.length}`;
    if (span === drawn && !force) return;
    drawn = span;
    const focused = document.activeElement?.dataset?.id; // a re-drawn grid keeps the keyboard where it was
    rows.replaceChildren(...items.slice(first * columns, last * columns).map(tile));
    rows.style.transform = `translateY(${first * height}px)`;
    box.style.height = `${rowCount * height}px`;
    if (!rowHeight && rows.firstElementChild) {
      measure();
      return draw(true);
    }
    if (focused) rows.querySelector(`[data-id="${CSS.escape(focused)}"]`)?.focus({ preventScroll: true });
  }
  const later = () => {
    if (!box.isConnected && drawn) return removeEventListener("scroll", later); // the page was left
    frame ||= requestAnimationFrame(() => draw());
  };
  addEventListener("scroll", later, { passive: true });
  new ResizeObserver(() => { rowHeight = 0; drawn = ""; later(); }).observe(box);

  // Brings item `index` into view and gives it the keyboard.
  function focusIndex(index) {
    const at = Math.min(items.length - 1, Math.max(0, index));
    const rowTop = box.getBoundingClientRect().top + Math.floor(at / columns) * rowHeight;
    if (rowTop < 0) scrollBy(0, rowTop - 8);
    else if (rowTop + rowHeight > innerHeight) scrollBy(0, rowTop + rowHeight - innerHeight + 8);
    draw(true);
    rows.querySelector(`[data-id="${CSS.escape(key(items[at]))}"]`)?.focus({ preventScroll: true });
  }

  box.addEventListener("keydown", (e) => {
    const at = items.findIndex((item) => key(item) === document.activeElement?.dataset?.id);
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns, Home: -at,
                    End: items.length - 1 - at };
    if (at < 0 || !(e.key in moves)) return;
    e.preventDefault();
    focusIndex(at + moves[e.key]);
  });

  return {
    element: box,
    show(next) { items = next; draw(true); },
    focusIndex,
  };
}
