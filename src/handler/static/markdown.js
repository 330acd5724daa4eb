// A small, safe Markdown renderer for the chat page.
//
// It builds DOM nodes with createElement and textContent only: no text it is given
// ever reaches innerHTML, so raw HTML in a message (`<img src=x onerror=...>`) is
// shown as the characters it is. Links keep only http(s) and mailto addresses.
//
// Blocks: paragraphs (single newlines are line breaks), ATX headings, fenced code
// (``` or ~~~, unclosed fences run to the end so a streaming answer renders as it
// grows), indented code, block quotes, ordered and unordered lists (nested by
// indentation, task boxes shown as text), GFM tables and thematic breaks.
// Inline: code spans, **strong**, *emphasis*, ~~strike~~, [links](url), <autolinks>,
// bare http(s) URLs, backslash escapes. Images are shown as links, never loaded.
//
// The renderer is total: whatever the input, it returns nodes and never throws.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const PUNCTUATION = /[!-/:-@[-`{-~]/;
const MAX_DEPTH = 12;

/** A DocumentFragment holding `text` rendered as Markdown. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const source = String(text ?? "")
    .replace(/\r\n?/g, "\n")
    .replace(/\t/g, "    ");
  for (const node of parseBlocks(source.split("\n"), 0)) {
    fragment.append(node);
  }
  return fragment;
}

/** The href for `raw` if it is an absolute http(s) or mailto URL, else null. */
export function safeHref(raw) {
  const candidate = String(raw ?? "").trim();
  if (!/^(https?:\/\/|mailto:)/i.test(candidate)) {
    return null;
  }
  try {
    const url = new URL(candidate);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function el(tag, children = [], attributes = {}) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child);
  }
  return node;
}

// ---------------------------------------------------------------- blocks

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])( +|$)(.*)$/;
const TABLE_DIVIDER = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;

function isBlank(line) {
  return line.trim() === "";
}

function parseBlocks(lines, depth) {
  const nodes = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      i = parseFence(lines, i, fence, nodes);
      continue;
    }
    if (/^ {4,}\S/.test(line)) {
      i = parseIndentedCode(lines, i, nodes);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = heading[1].length;
      nodes.push(el(`h${level}`, parseInline(heading[2] ?? "", depth)));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      nodes.push(el("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && !isBlank(lines[i])) {
        const match = QUOTE.exec(lines[i]);
        if (!match && startsBlock(lines, i)) {
          break;
        }
        quoted.push(match ? match[1] : lines[i]);
        i += 1;
      }
      const inner = depth < MAX_DEPTH ? parseBlocks(quoted, depth + 1) : [document.createTextNode(quoted.join("\n"))];
      nodes.push(el("blockquote", inner));
      continue;
    }
    if (LIST_ITEM.test(line)) {
      i = parseList(lines, i, nodes, depth);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_DIVIDER.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const table = parseTable(lines, i, depth);
      if (table) {
        nodes.push(table.node);
        i = table.next;
        continue;
      }
    }
    i = parseParagraph(lines, i, nodes, depth);
  }
  return nodes;
}

function startsBlock(lines, i) {
  const line = lines[i];
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST_ITEM.test(line);
}

function parseFence(lines, start, fence, nodes) {
  const marker = fence[1];
  const language = fence[2];
  const body = [];
  let i = start + 1;
  const indent = indentOf(lines[start]);
  const closing = new RegExp(`^ {0,3}${marker[0]}{${marker.length},}\\s*$`);
  while (i < lines.length) {
    if (closing.test(lines[i])) {
      i += 1;
      break;
    }
    body.push(lines[i].replace(new RegExp(`^ {0,${indent}}`), ""));
    i += 1;
  }
  const code = el("code", [body.join("\n")]);
  if (language && /^[\w+#.-]{1,40}$/.test(language)) {
    code.className = `language-${language}`;
    code.dataset.language = language;
  }
  nodes.push(el("pre", [code]));
  return i;
}

function parseIndentedCode(lines, start, nodes) {
  const body = [];
  let i = start;
  while (i < lines.length && (/^ {4}/.test(lines[i]) || isBlank(lines[i]))) {
    body.push(lines[i].slice(4));
    i += 1;
  }
  while (body.length && isBlank(body[body.length - 1])) {
    body.pop();
  }
  nodes.push(el("pre", [el("code", [body.join("\n")])]));
  return i;
}

function parseParagraph(lines, start, nodes, depth) {
  const text = [lines[start].trim()];
  let i = start + 1;
  while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines, i)) {
    text.push(lines[i].trim());
    i += 1;
  }
  const children = [];
  text.forEach((line, index) => {
    if (index > 0) {
      children.push(el("br"));
    }
    children.push(...parseInline(line, depth));
  });
  nodes.push(el("p", children));
  return i;
}

function indentOf(line) {
  return /^ */.exec(line)[0].length;
}

function parseList(lines, start, nodes, depth) {
  const first = LIST_ITEM.exec(lines[start]);
  const baseIndent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const delimiter = first[2].slice(-1);
  const isSibling = (line) => {
    const match = LIST_ITEM.exec(line);
    return (
      match !== null &&
      !RULE.test(line) &&
      match[1].length >= baseIndent &&
      match[1].length <= baseIndent + 3 &&
      /\d/.test(match[2]) === ordered &&
      match[2].slice(-1) === delimiter
    );
  };
  const items = [];
  let loose = false;
  let i = start;
  while (i < lines.length && isSibling(lines[i])) {
    const match = LIST_ITEM.exec(lines[i]);
    const gap = match[3].length;
    const contentIndent = match[1].length + match[2].length + (gap === 0 || gap > 4 ? 1 : gap);
    const body = [match[4]];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        let next = i;
        while (next < lines.length && isBlank(lines[next])) {
          next += 1;
        }
        if (next < lines.length && indentOf(lines[next]) >= contentIndent) {
          body.push(...lines.slice(i, next).map(() => "")); // more blocks in this item
          loose = true;
          i = next;
          continue;
        }
        if (next < lines.length && isSibling(lines[next])) {
          loose = true; // items separated by blank lines
          i = next;
        }
        break;
      }
      const indent = indentOf(line);
      if (indent >= contentIndent) {
        body.push(line.slice(contentIndent));
      } else if (isSibling(line)) {
        break;
      } else if (LIST_ITEM.test(line) && indent > baseIndent) {
        body.push(line.slice(indent)); // a nested list indented less than the text
      } else if (startsBlock(lines, i)) {
        break;
      } else {
        body.push(line.trim()); // a lazy continuation of the item's paragraph
      }
      i += 1;
    }
    items.push(body);
  }
  const list = el(ordered ? "ol" : "ul");
  const number = Number.parseInt(first[2], 10);
  if (ordered && number !== 1) {
    list.setAttribute("start", String(number));
  }
  for (const body of items) {
    const children = depth < MAX_DEPTH ? parseBlocks(body, depth + 1) : [document.createTextNode(body.join("\n"))];
    const li = el("li");
    for (const child of children) {
      if (!loose && child.tagName === "P") {
        li.append(...child.childNodes); // a tight list: no paragraphs inside items
      } else {
        li.append(child);
      }
    }
    list.append(li);
  }
  nodes.push(list);
  return i;
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) {
    row = row.slice(1);
  }
  if (row.endsWith("|") && !row.endsWith("\\|")) {
    row = row.slice(0, -1);
  }
  const cells = [];
  let current = "";
  for (let i = 0; i < row.length; i += 1) {
    if (row[i] === "\\" && row[i + 1] === "|") {
      current += "|";
      i += 1;
    } else if (row[i] === "|") {
      cells.push(current.trim());
      current = "";
    } else {
      current += row[i];
    }
  }
  cells.push(current.trim());
  return cells;
}

function parseTable(lines, start, depth) {
  const header = splitRow(lines[start]);
  const divider = splitRow(lines[start + 1]);
  if (header.length !== divider.length) {
    return null;
  }
  const align = divider.map((cell) => {
    const left = cell.startsWith(":");
    const right = cell.endsWith(":");
    return left && right ? "center" : right ? "right" : left ? "left" : "";
  });
  const cell = (tag, text, column) => {
    const node = el(tag, parseInline(text, depth));
    if (align[column]) {
      node.className = `align-${align[column]}`;
    }
    return node;
  };
  const head = el("thead", [el("tr", header.map((text, column) => cell("th", text, column)))]);
  const body = el("tbody");
  let i = start + 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    const cells = splitRow(lines[i]);
    body.append(el("tr", header.map((_, column) => cell("td", cells[column] ?? "", column))));
    i += 1;
  }
  return { node: el("div", [el("table", [head, body])], { class: "table-scroll" }), next: i };
}

// ---------------------------------------------------------------- inline

/** Inline Markdown in `text` as an array of nodes (text nodes and elements). */
export function parseInline(text, depth = 0) {
  const out = [];
  let buffer = "";
  const flush = () => {
    if (buffer) {
      out.push(document.createTextNode(buffer));
      buffer = "";
    }
  };
  const push = (node) => {
    flush();
    out.push(node);
  };
  const nested = (inner) => (depth < MAX_DEPTH ? parseInline(inner, depth + 1) : [document.createTextNode(inner)]);

  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const rest = text.slice(i);

    if (ch === "\\" && i + 1 < text.length && PUNCTUATION.test(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }

    if (ch === "`") {
      const run = /^`+/.exec(rest)[0];
      const close = findCodeClose(text, i + run.length, run.length);
      if (close >= 0) {
        let code = text.slice(i + run.length, close);
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) {
          code = code.slice(1, -1);
        }
        push(el("code", [code]));
        i = close + run.length;
      } else {
        buffer += run;
        i += run.length;
      }
      continue;
    }

    if (ch === "!" && text[i + 1] === "[") {
      const link = parseLink(text, i + 1);
      if (link) {
        // Images are never loaded: the page shows a link to them instead.
        const label = link.label || link.href;
        const href = safeHref(link.href);
        push(href ? anchor(href, [`🖼 ${label}`], link.title) : document.createTextNode(label));
        i = link.end;
        continue;
      }
    }

    if (ch === "[") {
      const link = parseLink(text, i);
      if (link) {
        const href = safeHref(link.href);
        const children = link.label ? nested(link.label) : [link.href];
        if (href) {
          push(anchor(href, children, link.title));
        } else {
          flush();
          out.push(...children); // an unsafe or relative link keeps only its text
        }
        i = link.end;
        continue;
      }
    }

    if (ch === "<") {
      const auto = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(rest);
      if (auto) {
        const href = safeHref(auto[1]);
        push(href ? anchor(href, [auto[1]]) : document.createTextNode(auto[1]));
        i += auto[0].length;
        continue;
      }
    }

    if ((ch === "h" || ch === "H") && (i === 0 || !/[\w/]/.test(text[i - 1]))) {
      const bare = /^https?:\/\/[^\s<>"]+/i.exec(rest);
      if (bare) {
        let url = bare[0];
        // Trailing punctuation belongs to the sentence, unless it closes a bracket in the URL.
        while (/[.,:;!?'"*_~]$/.test(url) || (url.endsWith(")") && count(url, "(") < count(url, ")"))) {
          url = url.slice(0, -1);
        }
        const href = safeHref(url);
        if (href) {
          push(anchor(href, [url]));
          i += url.length;
          continue;
        }
      }
    }

    if (ch === "*" || ch === "_" || ch === "~") {
      const emphasis = parseEmphasis(text, i);
      if (emphasis) {
        const inner = nested(emphasis.inner);
        push(emphasis.tag === "strong-em" ? el("strong", [el("em", inner)]) : el(emphasis.tag, inner));
        i = emphasis.end;
        continue;
      }
      const run = ch === "~" ? /^~+/.exec(rest)[0] : ch === "*" ? /^\*+/.exec(rest)[0] : /^_+/.exec(rest)[0];
      buffer += run;
      i += run.length;
      continue;
    }

    buffer += ch;
    i += 1;
  }
  flush();
  return out;
}

function count(text, ch) {
  return text.split(ch).length - 1;
}

function anchor(href, children, title) {
  const node = el("a", children, { href, target: "_blank", rel: "noopener noreferrer" });
  if (title) {
    node.title = title;
  }
  return node;
}

function findCodeClose(text, from, length) {
  let i = from;
  while (i < text.length) {
    if (text[i] === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      if (run.length === length) {
        return i;
      }
      i += run.length;
    } else {
      i += 1;
    }
  }
  return -1;
}

/** `[label](href "title")` starting at `start` (the `[`), or null. */
function parseLink(text, start) {
  let depth = 0;
  let i = start;
  let labelEnd = -1;
  while (i < text.length) {
    const ch = text[i];
    if (ch === "\\") {
      i += 2;
      continue;
    }
    if (ch === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const close = findCodeClose(text, i + run.length, run.length);
      i = close >= 0 ? close + run.length : i + run.length;
      continue;
    }
    if (ch === "[") {
      depth += 1;
    } else if (ch === "]") {
      depth -= 1;
      if (depth === 0) {
        labelEnd = i;
        break;
      }
    }
    i += 1;
  }
  if (labelEnd < 0 || text[labelEnd + 1] !== "(") {
    return null;
  }
  const target = /^\(\s*(<[^<>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+("[^"]*"|'[^']*'))?\s*\)/.exec(
    text.slice(labelEnd + 1),
  );
  if (!target) {
    return null;
  }
  let href = target[1];
  if (href.startsWith("<") && href.endsWith(">")) {
    href = href.slice(1, -1);
  }
  return {
    label: text.slice(start + 1, labelEnd),
    href,
    title: target[2] ? target[2].slice(1, -1) : "",
    end: labelEnd + 1 + target[0].length,
  };
}

/** `***x***`, `**x**`, `__x__`, `*x*`, `_x_` or `~~x~~` starting at `start`, or null. */
function parseEmphasis(text, start) {
  const candidates = [
    ["***", "strong-em"],
    ["___", "strong-em"],
    ["**", "strong"],
    ["__", "strong"],
    ["~~", "del"],
    ["*", "em"],
    ["_", "em"],
  ];
  for (const [marker, tag] of candidates) {
    if (!text.startsWith(marker, start)) {
      continue;
    }
    const after = text[start + marker.length];
    if (after === undefined || /\s/.test(after) || after === marker[0]) {
      continue;
    }
    const before = start > 0 ? text[start - 1] : "";
    if (marker[0] === "_" && /[\p{L}\p{N}]/u.test(before)) {
      continue; // snake_case stays as it is
    }
    const close = findEmphasisClose(text, start + marker.length, marker);
    if (close < 0) {
      continue;
    }
    return { tag, inner: text.slice(start + marker.length, close), end: close + marker.length };
  }
  return null;
}

function findEmphasisClose(text, from, marker) {
  const char = marker[0];
  let i = from;
  while (i < text.length) {
    const ch = text[i];
    if (ch === "\\") {
      i += 2;
      continue;
    }
    if (ch === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const close = findCodeClose(text, i + run.length, run.length);
      i = close >= 0 ? close + run.length : i + run.length;
      continue;
    }
    if (ch !== char) {
      i += 1;
      continue;
    }
    let run = 1;
    while (text[i + run] === char) {
      run += 1;
    }
    const after = text[i + run];
    const rightFlanking = !/\s/.test(text[i - 1]);
    const endsWord = char !== "_" || after === undefined || !/[\p{L}\p{N}]/u.test(after);
    if (run === marker.length && rightFlanking && endsWord) {
      return i;
    }
    i += run; // another run (nested emphasis of another kind): not ours
  }
  return -1;
}
