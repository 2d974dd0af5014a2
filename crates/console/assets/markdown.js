// A small Markdown renderer for model output. Model output is never trusted: it is split
// into blocks and inline spans here and every piece becomes a text node, so no string the
// model writes is ever parsed as HTML (no innerHTML anywhere).
"use strict";

Basalt.renderMarkdown = (() => {
  const { el } = Basalt;

  // `code`, **bold**, *italic* / _italic_ (underscores only at word edges, so snake_case
  // stays as written); everything else is text.
  function inline(text) {
    const fragment = document.createDocumentFragment();
    const pattern = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)|((?<![\w])_[^_\n]+_(?![\w]))/g;
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) fragment.append(text.slice(last, match.index));
      const token = match[0];
      if (match[1]) fragment.append(el("code", { text: token.slice(1, -1) }));
      else if (match[2]) fragment.append(el("strong", { text: token.slice(2, -2) }));
      else fragment.append(el("em", { text: token.slice(1, -1) }));
      last = match.index + token.length;
    }
    if (last < text.length) fragment.append(text.slice(last));
    return fragment;
  }

  function paragraph(lines) {
    const p = el("p");
    lines.forEach((line, i) => {
      if (i > 0) p.append(el("br"));
      p.append(inline(line));
    });
    return p;
  }

  return function render(text) {
    const root = document.createDocumentFragment();
    const lines = text.split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s*```(.*)$/);
      if (fence) {
        const body = [];
        i += 1;
        while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) body.push(lines[i++]);
        i += 1; // the closing fence (or the end of an unfinished one, mid-stream)
        const code = el("code", { text: body.join("\n") });
        if (fence[1].trim()) code.dataset.lang = fence[1].trim();
        root.append(el("pre", {}, code));
        continue;
      }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      if (heading) {
        root.append(el(`h${Math.min(heading[1].length + 2, 6)}`, {}, inline(heading[2])));
        i += 1;
        continue;
      }
      const bullet = /^\s*[-*+]\s+(.*)$/;
      const numbered = /^\s*\d+[.)]\s+(.*)$/;
      if (bullet.test(line) || numbered.test(line)) {
        const ordered = numbered.test(line);
        const pattern = ordered ? numbered : bullet;
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length && pattern.test(lines[i])) {
          list.append(el("li", {}, inline(lines[i].match(pattern)[1])));
          i += 1;
        }
        root.append(list);
        continue;
      }
      if (!line.trim()) { i += 1; continue; }
      const block = [];
      while (i < lines.length && lines[i].trim() && !/^\s*```/.test(lines[i]) && !/^#{1,6}\s/.test(lines[i])
             && !bullet.test(lines[i]) && !numbered.test(lines[i])) {
        block.push(lines[i++]);
      }
      root.append(paragraph(block));
    }
    return root;
  };
})();
