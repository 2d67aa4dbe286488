// Tiny DOM helpers shared by the pages (no framework: the pages are small and must not need a build).

export const $ = (selector, root = document) => root.querySelector(selector);

/** el("span.cls", {text, title, dataset...}, children) */
export function el(spec, props = {}, children = []) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

export function show(node, visible = true) {
  node.hidden = !visible;
}

/** A "Copy" button for the text of `source` (an input or any element). */
export function copyButton(source, label = "Copy", accessibleName = "") {
  const button = el("button.copy", { type: "button", text: label });
  if (accessibleName) button.setAttribute("aria-label", accessibleName);
  button.addEventListener("click", async () => {
    const text = "value" in source ? source.value : source.textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      if ("select" in source) source.select();
      button.textContent = "Press Ctrl+C";
    }
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}
