// The image playground: /v1/images/generations, the PNG shown and downloadable.
"use strict";

(() => {
  const { json } = Basalt;
  const $ = (id) => document.getElementById(id);
  const form = $("image-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error").textContent = "";
    $("send").disabled = true;
    $("send").textContent = "Generating…";
    const started = performance.now();
    try {
      const body = { model: $("model").value, prompt: $("prompt").value, n: 1, response_format: "b64_json" };
      if ($("size").value) body.size = $("size").value;
      if ($("seed").value !== "") body.seed = Number($("seed").value);
      if ($("steps").value !== "") body.steps = Number($("steps").value);
      const result = await json("/v1/images/generations", { body });
      const url = `data:image/png;base64,${result.data[0].b64_json}`;
      $("image").src = url;
      $("download").href = url;
      $("result").classList.remove("hidden");
      $("stats").textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
    } catch (error) {
      $("error").textContent = error.message;
    } finally {
      $("send").disabled = false;
      $("send").textContent = "Generate";
    }
  });
})();
