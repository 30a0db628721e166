// DOM helpers for the console. Server text only ever becomes text nodes or attribute values:
// nothing here parses HTML.

const SVG = "http://www.w3.org/2000/svg";

function apply(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" || key === "checked") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An HTML element: h("td", { class: "num" }, "12"). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG, tag);
  apply(el, props);
  append(el, children);
  return el;
}

export const $ = (id) => document.getElementById(id);

/** A labelled form field: the label, then the control, wrapped so they stack. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint && h("small", { id: hintId }, hint));
}

/** A table with a caption (visually hidden when `hideCaption`), headers and rows of cells. */
export function table(caption, headers, rows, { numeric = [], id } = {}) {
  const head = h("tr", null, headers.map((text, i) => h("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, text)));
  const body = rows.map((row) =>
    h("tr", row.props || null, (row.cells || row).map((cell, i) => h("td", { class: numeric.includes(i) ? "num" : null }, cell))),
  );
  return h(
    "div",
    { class: "scroll" },
    h("table", { id }, h("caption", { class: "sr-only" }, caption), h("thead", null, head), h("tbody", null, body)),
  );
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), ...children);
}

export function empty(text) {
  return h("p", { class: "muted" }, text);
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function day(iso) {
  return iso ? new Date(iso).toLocaleDateString() : "—";
}

export function number(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString();
}

export function percent(value) {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)} %`;
}

/** A status line under a form: role=status for success, role=alert for an error. */
export function message(el, text, isError = false) {
  el.textContent = text;
  el.className = isError ? "error" : "ok";
  el.setAttribute("role", isError ? "alert" : "status");
  el.hidden = !text;
}

/** `fn` called once `ms` have passed without another call. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
