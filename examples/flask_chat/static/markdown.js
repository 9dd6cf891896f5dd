// A small Markdown renderer for the chat's answers: plain JavaScript, no build step, no innerHTML.
//
// renderMarkdown(text) returns a DocumentFragment built with createElement and text nodes only, so
// no text of the model (or of the user it quotes) can become markup: "<img onerror=...>" stays
// text. It knows what chat answers use: paragraphs, headings (#, ##, ###), bullet and numbered
// lists, fenced code blocks, `code`, **bold**, *italic* and _italic_, and links to http(s) and
// mailto addresses (any other link stays text). An unclosed fence or marker (an answer still being
// written) shows as it is until it closes.
"use strict";

(function () {
  const SAFE_URL = /^(https?:|mailto:)/i;
  const LIST_ITEM = /^\s*([-*]|\d+\.)\s+/;
  const BLOCK_START = /^(```|#{1,3}\s|\s*([-*]|\d+\.)\s+)/;
  const INLINE = /(`+)([^`][\s\S]*?)\1|\*\*([^*\s][\s\S]*?)\*\*|\[([^\]]+)\]\(([^()\s]+)\)|\*([^*\s][^*]*?)\*|(?<!\w)_([^_\s][^_]*?)_(?!\w)/g;

  const make = (tag, children) => {
    const node = document.createElement(tag);
    if (children !== undefined) node.append(...children);
    return node;
  };

  // The inline markup of `text`, as nodes.
  function inline(text) {
    const nodes = [];
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) nodes.push(text.slice(last, m.index));
      if (m[1]) {
        const code = make("code");
        code.textContent = m[2];
        nodes.push(code);
      } else if (m[3] !== undefined) {
        nodes.push(make("strong", inline(m[3])));
      } else if (m[4] !== undefined) {
        if (SAFE_URL.test(m[5])) {
          const link = make("a", inline(m[4]));
          link.href = m[5];
          link.rel = "noopener noreferrer";
          link.target = "_blank";
          nodes.push(link);
        } else {
          nodes.push(m[0]); // javascript:, data: and the like stay text
        }
      } else {
        nodes.push(make("em", inline(m[6] ?? m[7])));
      }
      last = m.index + m[0].length;
    }
    if (last < text.length) nodes.push(text.slice(last));
    return nodes;
  }

  function renderMarkdown(source) {
    const root = document.createDocumentFragment();
    const lines = source.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let heading;
      if (line.startsWith("```")) {
        const code = [];
        for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
        i++; // the closing fence
        const block = make("code");
        block.textContent = code.join("\n");
        root.append(make("pre", [block]));
      } else if ((heading = /^(#{1,3})\s+(.*)$/.exec(line))) {
        root.append(make(`h${heading[1].length + 2}`, inline(heading[2])));
        i++;
      } else if (LIST_ITEM.test(line)) {
        const list = make(/^\s*\d/.test(line) ? "ol" : "ul");
        for (; i < lines.length && LIST_ITEM.test(lines[i]); i++) {
          list.append(make("li", inline(lines[i].replace(LIST_ITEM, ""))));
        }
        root.append(list);
      } else if (line.trim() === "") {
        i++;
      } else {
        const paragraph = make("p");
        for (let first = true; i < lines.length && lines[i].trim() !== "" && (first || !BLOCK_START.test(lines[i])); i++) {
          if (!first) paragraph.append(make("br"));
          paragraph.append(...inline(lines[i]));
          first = false;
        }
        root.append(paragraph);
      }
    }
    return root;
  }

  window.renderMarkdown = renderMarkdown;
})();
