// Keeps the overview's engine table live: queue depth, running sequences, KV use.
"use strict";

(() => {
  const table = document.getElementById("engines");
  if (!table) return;
  async function refresh() {
    try {
      const engines = await Basalt.json("/console/health.json", { method: "GET" });
      for (const engine of engines) {
        const row = [...table.querySelectorAll("tr[data-model]")].find((r) => r.dataset.model === engine.model);
        if (!row) continue;
        for (const cell of row.querySelectorAll("[data-field]")) {
          const value = engine[cell.dataset.field];
          cell.textContent = cell.dataset.field.startsWith("kv_bytes") ? Basalt.formatBytes(value) : String(value);
        }
      }
    } catch (_) { /* the next tick tries again */ }
  }
  setInterval(refresh, 3000);
})();
