// The text playground: raw completions from /v1/completions, streamed.
"use strict";

(() => {
  const { api, readEvents } = Basalt;
  const $ = (id) => document.getElementById(id);
  const form = $("text-form");
  if (!form) return;
  let controller = null;
  $("stop").addEventListener("click", () => controller?.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error").textContent = "";
    $("prompt-echo").textContent = $("prompt").value;
    $("continuation").textContent = "";
    $("send").disabled = true;
    $("stop").disabled = false;
    controller = new AbortController();
    const started = performance.now();
    let first = null;
    let usage = null;
    try {
      const body = {
        model: $("model").value,
        prompt: $("prompt").value,
        temperature: Number($("temperature").value),
        max_tokens: Number($("max_tokens").value),
        stream: true,
        stream_options: { include_usage: true },
      };
      const response = await api("/v1/completions", { body, signal: controller.signal });
      await readEvents(response, (chunk) => {
        if (chunk.usage) usage = chunk.usage;
        const text = chunk.choices?.[0]?.text;
        if (text) {
          if (first === null) first = performance.now() - started;
          $("continuation").textContent += text;
        }
      });
      const seconds = (performance.now() - started) / 1000;
      const out = usage?.completion_tokens ?? 0;
      $("stats").textContent = `TTFT ${Math.round(first ?? 0)} ms · ${usage?.prompt_tokens ?? "?"} tokens in, ${out} out · ${(out / seconds).toFixed(1)} tokens/s`;
    } catch (error) {
      $("stats").textContent = error.name === "AbortError" ? "stopped" : "";
      if (error.name !== "AbortError") $("error").textContent = error.message;
    } finally {
      $("send").disabled = false;
      $("stop").disabled = true;
    }
  });
})();
