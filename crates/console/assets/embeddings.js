// The embeddings playground: embeds each line with /v1/embeddings and shows the cosine
// similarity of every pair, shaded (through CSSOM, which the page's CSP allows).
"use strict";

(() => {
  const { el, json } = Basalt;
  const $ = (id) => document.getElementById(id);
  const form = $("embed-form");
  if (!form) return;

  const cosine = (a, b) => {
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
    return dot / (Math.sqrt(na) * Math.sqrt(nb) || 1);
  };
  const short = (t) => (t.length > 28 ? `${t.slice(0, 27)}…` : t);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error").textContent = "";
    const texts = $("texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
    if (!texts.length) return;
    $("send").disabled = true;
    const started = performance.now();
    try {
      const result = await json("/v1/embeddings", { body: { model: $("model").value, input: texts } });
      const vectors = result.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
      const head = el("tr", {}, el("th"));
      texts.forEach((t) => head.append(el("th", { text: short(t), title: t })));
      const rows = texts.map((t, i) => {
        const row = el("tr", {}, el("th", { text: short(t), title: t }));
        vectors.forEach((v, j) => {
          const s = cosine(vectors[i], v);
          const cell = el("td", { text: s.toFixed(3) });
          cell.style.backgroundColor = `rgba(47, 91, 211, ${Math.max(0, s).toFixed(3) * 0.55})`;
          row.append(cell);
        });
        return row;
      });
      $("matrix").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
      $("stats").textContent = `${vectors.length} vectors of ${vectors[0]?.length ?? 0} dimensions · ${result.usage?.prompt_tokens ?? "?"} tokens · ${Math.round(performance.now() - started)} ms`;
    } catch (error) {
      $("error").textContent = error.message;
    } finally {
      $("send").disabled = false;
    }
  });
})();
