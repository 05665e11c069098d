/**
 * A minimal XML reader for checking the structure of the SVG and HTML that
 * `tost inspect` writes: elements with attributes and children, text kept
 * per element; throws on a closing tag that does not match (so a picture
 * that is not well-formed fails its test). Enough for generated markup
 * without comments, CDATA or entities beyond the five XML ones.
 *
 * @module
 */

/** An element of the tree. */
export interface Element {
  name: string;
  attrs: Record<string, string>;
  children: Element[];
  /** Text directly inside the element (not its children's). */
  text: string;
  /** Text and child elements in document order. */
  content: (Element | string)[];
}

const TAG = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+(?:="[^"]*")?)*)\s*(\/?)>|<!doctype[^>]*>/gi;
const ATTR = /([\w:-]+)(?:="([^"]*)")?/g;
const VOID = new Set(["meta", "br", "img", "link", "input"]);

function unescape(s: string): string {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'").replace(/&amp;/g, "&");
}

/** Parse markup into a root element holding the top-level elements. */
export function parseXml(text: string): Element {
  const root: Element = { name: "#root", attrs: {}, children: [], text: "", content: [] };
  const stack = [root];
  let last = 0;
  for (const m of text.matchAll(TAG)) {
    const between = unescape(text.slice(last, m.index));
    stack[stack.length - 1].text += between;
    if (between) stack[stack.length - 1].content.push(between);
    last = m.index! + m[0].length;
    if (m[2] === undefined) continue; // doctype
    const [, closing, name, attrText, selfClosing] = m;
    if (closing) {
      const open = stack.pop()!;
      if (open.name !== name) throw new Error(`</${name}> closes <${open.name}>`);
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of attrText.matchAll(ATTR)) attrs[a[1]] = unescape(a[2] ?? "");
    const el: Element = { name, attrs, children: [], text: "", content: [] };
    stack[stack.length - 1].children.push(el);
    stack[stack.length - 1].content.push(el);
    if (!selfClosing && !VOID.has(name.toLowerCase())) stack.push(el);
  }
  if (stack.length !== 1) throw new Error(`<${stack[stack.length - 1].name}> is never closed`);
  return root;
}

/** Every element below `el` (depth first) that `match` accepts. */
export function findAll(el: Element, match: (e: Element) => boolean): Element[] {
  const out: Element[] = [];
  const walk = (e: Element) => {
    for (const c of e.children) {
      if (match(c)) out.push(c);
      walk(c);
    }
  };
  walk(el);
  return out;
}

/** Elements with a class. */
export function byClass(el: Element, cls: string): Element[] {
  return findAll(el, (e) => (e.attrs.class ?? "").split(" ").includes(cls));
}

/** The text of an element and all its descendants. */
export function textOf(el: Element): string {
  return el.content.map((c) => (typeof c === "string" ? c : textOf(c))).join("");
}
