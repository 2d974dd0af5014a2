// The chat playground: streams /v1/chat/completions from one model or two side by side,
// renders answers as they arrive (through the safe Markdown renderer), measures time to
// first token, and shows the same request as curl, the openai SDK and boto3's Converse.
"use strict";

(() => {
  const { el, api, readEvents } = Basalt;
  const $ = (id) => document.getElementById(id);
  const form = $("chat-form");
  if (!form) return;
  const panels = [$("panel-1"), $("panel-2")];
  let conversations = [[], []];
  let inFlight = [];

  $("mode").addEventListener("change", () => {
    $("schema-field").classList.toggle("hidden", $("mode").value !== "json");
    $("tools-field").classList.toggle("hidden", $("mode").value !== "tools");
  });
  $("model2").addEventListener("change", () => {
    const compare = Boolean($("model2").value);
    panels[1].classList.toggle("hidden", !compare);
    $("panels").classList.toggle("compare", compare);
  });
  $("clear").addEventListener("click", () => {
    conversations = [[], []];
    for (const panel of panels) {
      panel.querySelector(".transcript").replaceChildren();
      panel.querySelector(".stats").textContent = "";
    }
  });
  $("stop").addEventListener("click", () => inFlight.forEach((c) => c.abort()));

  // The request body for one model, given the conversation so far.
  function requestBody(model, history) {
    const messages = [];
    const system = $("system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...history);
    const body = {
      model,
      messages,
      temperature: Number($("temperature").value),
      top_p: Number($("top_p").value),
      max_tokens: Number($("max_tokens").value),
    };
    if ($("mode").value === "json") {
      body.response_format = {
        type: "json_schema",
        json_schema: { name: "answer", schema: JSON.parse($("schema").value), strict: true },
      };
    } else if ($("mode").value === "tools") {
      body.tools = JSON.parse($("tools").value);
    }
    return body;
  }

  async function run(panelIndex, model, userText) {
    const panel = panels[panelIndex];
    const history = conversations[panelIndex];
    history.push({ role: "user", content: userText });
    const transcript = panel.querySelector(".transcript");
    panel.querySelector(".panel-title").textContent = model;
    transcript.append(el("div", { class: "msg user", text: userText }));
    const bubble = el("div", { class: "msg assistant" });
    transcript.append(bubble);
    const stats = panel.querySelector(".stats");
    stats.textContent = "waiting…";

    const controller = new AbortController();
    inFlight.push(controller);
    const started = performance.now();
    let firstToken = null;
    let content = "";
    let reasoning = "";
    const toolCalls = [];
    let usage = null;
    const reasoningBox = el("details", { class: "reasoning hidden" }, el("summary", { text: "Reasoning" }), el("pre"));
    const answer = el("div", { class: "answer" });
    bubble.append(reasoningBox, answer);

    const paint = () => {
      answer.replaceChildren(Basalt.renderMarkdown(content));
      for (const call of toolCalls) {
        answer.append(el("pre", { class: "tool-call", text: `tool call: ${call.name}(${call.arguments})` }));
      }
      if (reasoning) {
        reasoningBox.classList.remove("hidden");
        reasoningBox.querySelector("pre").textContent = reasoning;
      }
    };
    try {
      const body = { ...requestBody(model, history), stream: true, stream_options: { include_usage: true } };
      const response = await api("/v1/chat/completions", { body, signal: controller.signal });
      await readEvents(response, (chunk) => {
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices?.[0]?.delta;
        if (!delta) return;
        if (delta.content || delta.reasoning_content || delta.tool_calls) {
          if (firstToken === null) firstToken = performance.now() - started;
        }
        if (delta.content) content += delta.content;
        if (delta.reasoning_content) reasoning += delta.reasoning_content;
        for (const call of delta.tool_calls ?? []) {
          const slot = (toolCalls[call.index ?? 0] ??= { name: "", arguments: "" });
          if (call.function?.name) slot.name += call.function.name;
          if (call.function?.arguments) slot.arguments += call.function.arguments;
        }
        if (firstToken === null) return;
        paint();
        stats.textContent = `TTFT ${Math.round(firstToken)} ms · streaming…`;
      });
      history.push({ role: "assistant", content });
      const seconds = (performance.now() - started) / 1000;
      const out = usage?.completion_tokens ?? 0;
      stats.textContent = `TTFT ${Math.round(firstToken ?? 0)} ms · ${usage?.prompt_tokens ?? "?"} tokens in, ${out} out · ${(out / seconds).toFixed(1)} tokens/s`;
      stats.dataset.outputTokens = String(out);
    } catch (error) {
      if (error.name === "AbortError") {
        history.push({ role: "assistant", content });
        stats.textContent = "stopped";
      } else {
        history.pop();
        bubble.classList.add("error");
        answer.replaceChildren(error.message);
        $("error").textContent = error.message;
        stats.textContent = "";
      }
    } finally {
      paint();
      inFlight = inFlight.filter((c) => c !== controller);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("message").value.trim();
    if (!text) return;
    $("error").textContent = "";
    try { requestBody($("model").value, []); } catch (e) {
      $("error").textContent = `The ${$("mode").value === "json" ? "schema" : "tools"} field is not valid JSON: ${e.message}`;
      return;
    }
    $("message").value = "";
    $("send").disabled = true;
    $("stop").disabled = false;
    const runs = [run(0, $("model").value, text)];
    if ($("model2").value) runs.push(run(1, $("model2").value, text));
    await Promise.allSettled(runs);
    $("send").disabled = false;
    $("stop").disabled = true;
    refreshCode();
  });

  // "View code": the current request as a developer would write it.
  function toPython(value, indent = "") {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "number") return String(value);
    if (typeof value === "string") return JSON.stringify(value);
    const next = indent + "    ";
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return `[\n${value.map((v) => next + toPython(v, next)).join(",\n")},\n${indent}]`;
    }
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    return `{\n${entries.map(([k, v]) => `${next}${JSON.stringify(k)}: ${toPython(v, next)}`).join(",\n")},\n${indent}}`;
  }

  function snippets() {
    const origin = window.location.origin;
    // The conversation so far, and the message being typed (or an example to start with).
    const pending = $("message").value.trim() || (conversations[0].length ? "" : "Hello!");
    const history = pending ? [...conversations[0], { role: "user", content: pending }] : [...conversations[0]];
    const body = requestBody($("model").value, history);
    const curlBody = JSON.stringify(body, null, 2).replaceAll("'", "'\\''");
    const curl = `curl ${origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $BASALT_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${curlBody}'`;
    const kwargs = Object.entries(body).map(([k, v]) => `    ${k}=${toPython(v, "    ")},`).join("\n");
    const python = `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key=os.environ["BASALT_API_KEY"])\nresponse = client.chat.completions.create(\n${kwargs}\n)\nprint(response.choices[0].message.content)`;
    const system = body.messages.filter((m) => m.role === "system").map((m) => ({ text: m.content }));
    const messages = body.messages.filter((m) => m.role !== "system").map((m) => ({ role: m.role, content: [{ text: m.content }] }));
    const converse = { modelId: body.model, messages };
    if (system.length) converse.system = system;
    converse.inferenceConfig = { temperature: body.temperature, topP: body.top_p, maxTokens: body.max_tokens };
    const args = Object.entries(converse).map(([k, v]) => `    ${k}=${toPython(v, "    ")},`).join("\n");
    const boto3 = `import boto3\n\n# Credentials: an AWS access key pair from the console, or AWS_BEARER_TOKEN_BEDROCK=<API key>\nclient = boto3.client("bedrock-runtime", endpoint_url="${origin}", region_name="us-east-1")\nresponse = client.converse(\n${args}\n)\nprint(response["output"]["message"]["content"][0]["text"])`;
    return { curl, python, boto3 };
  }

  let language = "curl";
  const showCode = () => {
    try { $("code-text").textContent = snippets()[language]; } catch (e) { $("code-text").textContent = e.message; }
  };
  // The code shown follows the form and the conversation.
  function refreshCode() {
    if (!$("code").classList.contains("hidden")) showCode();
  }
  form.addEventListener("input", refreshCode);
  form.addEventListener("change", refreshCode);
  $("clear").addEventListener("click", refreshCode);
  $("view-code").addEventListener("click", () => {
    $("code").classList.toggle("hidden");
    showCode();
  });
  for (const tab of document.querySelectorAll("#code .tabs button")) {
    tab.addEventListener("click", () => { language = tab.dataset.lang; showCode(); });
  }
})();
