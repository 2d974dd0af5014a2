// Shared by every console page: calling Basalt's public APIs with the console session,
// reading their event streams, and building DOM without ever parsing text as HTML.
"use strict";

const Basalt = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

  // An element with text content (never HTML) and children.
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // The message of an error body in any of the dialects (OpenAI, Anthropic, Bedrock).
  function errorMessage(status, body) {
    if (body && typeof body === "object") {
      if (body.error && typeof body.error === "object" && body.error.message) return body.error.message;
      if (body.message) return body.message;
      if (body.Message) return body.Message;
    }
    return `HTTP ${status}`;
  }

  // Calls an API with the session: the cookie travels by itself, the CSRF token in its header.
  async function api(path, { method = "POST", body, signal } = {}) {
    const init = {
      method,
      signal,
      credentials: "same-origin",
      headers: { "x-basalt-csrf": csrf() },
    };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (!response.ok) {
      let parsed = null;
      try { parsed = await response.json(); } catch (_) { /* not JSON */ }
      const error = new Error(errorMessage(response.status, parsed));
      error.status = response.status;
      throw error;
    }
    return response;
  }

  async function json(path, options) {
    const response = await api(path, options);
    return response.status === 204 ? null : response.json();
  }

  // Server-sent events: calls onData with each `data:` payload parsed as JSON, until [DONE].
  async function readEvents(response, onData) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }

  function formatBytes(b) {
    if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(1)} GiB`;
    if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(1)} MiB`;
    if (b >= 1024) return `${(b / 1024).toFixed(1)} KiB`;
    return `${b} B`;
  }

  function formatTime(value) {
    if (value === undefined || value === null || value === "") return "";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().slice(0, 16).replace("T", " ");
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    navigator.clipboard?.writeText(button.dataset.copy ?? "").then(
      () => { button.textContent = "Copied"; },
      () => { button.textContent = "Select and copy"; },
    );
  });

  return { el, api, json, readEvents, formatBytes, formatTime, csrf };
})();
