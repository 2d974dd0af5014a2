// Guardrails, knowledge bases and batch jobs: lists, forms and tests through the public
// Bedrock and OpenAI APIs, with the console session. Every value is set as text.
"use strict";

(() => {
  const { el, json, formatTime } = Basalt;
  const $ = (id) => document.getElementById(id);
  const showError = (error) => { if ($("error")) $("error").textContent = error.message; };
  const row = (...cells) => el("tr", {}, ...cells.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { text: c ?? "" }))));
  const fill = (table, rows, empty, columns) => {
    const body = table.querySelector("tbody");
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { text: empty, colspan: String(columns) }))]));
  };
  const split = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

  async function guardrails() {
    const table = $("guardrail-list");
    const load = async () => {
      const { guardrails: list } = await json("/guardrails?maxResults=1000", { method: "GET" });
      fill(table, list.map((g) => row(g.name, el("code", { text: g.id }), g.version, g.status, formatTime(g.updatedAt))), "No guardrails yet.", 5);
      $("g-test-id").replaceChildren(...list.map((g) => el("option", { value: g.id, text: `${g.name} (${g.id})` })));
    };
    $("guardrail-create").addEventListener("submit", async (event) => {
      event.preventDefault();
      $("error").textContent = "";
      const body = {
        name: $("g-name").value,
        blockedInputMessaging: $("g-input-msg").value,
        blockedOutputsMessaging: $("g-output-msg").value,
      };
      const words = split($("g-words").value);
      if (words.length) body.wordPolicyConfig = { wordsConfig: words.map((text) => ({ text })) };
      const pii = split($("g-pii").value);
      if (pii.length) body.sensitiveInformationPolicyConfig = { piiEntitiesConfig: pii.map((type) => ({ type: type.toUpperCase(), action: "BLOCK" })) };
      try { await json("/guardrails", { body }); event.target.reset(); await load(); } catch (e) { showError(e); }
    });
    $("guardrail-test").addEventListener("submit", async (event) => {
      event.preventDefault();
      $("error").textContent = "";
      try {
        const id = encodeURIComponent($("g-test-id").value);
        const result = await json(`/guardrail/${id}/version/DRAFT/apply`, {
          body: { source: $("g-source").value, content: [{ text: { text: $("g-text").value } }] },
        });
        $("g-action").textContent = result.action;
        $("g-output").textContent = JSON.stringify({ outputs: result.outputs, assessments: result.assessments }, null, 2);
        $("g-result").classList.remove("hidden");
      } catch (e) { showError(e); }
    });
    await load();
  }

  // Where a passage came from: its S3 URI, else the location as Bedrock gave it.
  const where = (location) => location?.s3Location?.uri ?? location?.customDocumentLocation?.id ?? JSON.stringify(location ?? {});

  async function knowledgeBases() {
    const table = $("kb-list");
    const { knowledgeBaseSummaries: list } = await json("/knowledgebases/", { body: { maxResults: 100 } });
    fill(table, list.map((k) => row(k.name, el("code", { text: k.knowledgeBaseId }), k.status, formatTime(k.updatedAt))), "No knowledge bases yet.", 4);
    $("kb-id").replaceChildren(...list.map((k) => el("option", { value: k.knowledgeBaseId, text: `${k.name} (${k.knowledgeBaseId})` })));
    const form = $("kb-query");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      $("error").textContent = "";
      $("kb-answer").classList.add("hidden");
      const id = $("kb-id").value;
      const text = $("kb-text").value;
      const k = Number($("kb-k").value);
      const model = $("kb-model").value;
      try {
        let results;
        if (model) {
          const modelArn = `arn:aws:bedrock:${form.dataset.region}::foundation-model/${model}`;
          const answer = await json("/retrieveAndGenerate", {
            body: {
              input: { text },
              retrieveAndGenerateConfiguration: {
                type: "KNOWLEDGE_BASE",
                knowledgeBaseConfiguration: {
                  knowledgeBaseId: id,
                  modelArn,
                  retrievalConfiguration: { vectorSearchConfiguration: { numberOfResults: k } },
                },
              },
            },
          });
          $("kb-answer-text").textContent = answer.output?.text ?? "";
          $("kb-answer").classList.remove("hidden");
          results = (answer.citations ?? []).flatMap((c) => c.retrievedReferences ?? []);
        } else {
          const found = await json(`/knowledgebases/${encodeURIComponent(id)}/retrieve`, {
            body: { retrievalQuery: { text }, retrievalConfiguration: { vectorSearchConfiguration: { numberOfResults: k } } },
          });
          results = found.retrievalResults ?? [];
        }
        $("kb-results").replaceChildren(...results.map((r) => el("li", {},
          el("p", { text: r.content?.text ?? "" }),
          el("p", { class: "hint", text: `${r.score !== undefined ? `score ${r.score.toFixed(3)} · ` : ""}${where(r.location)}` }))));
      } catch (e) { showError(e); }
    });
  }

  async function jobs() {
    const progress = (done, total) => (total ? `${done} / ${total}` : "—");
    const load = async () => {
      const bedrock = await json("/model-invocation-jobs?maxResults=100", { method: "GET" });
      fill($("bedrock-jobs"), (bedrock.invocationJobSummaries ?? []).map((j) => row(
        j.jobName, el("code", { text: j.modelId }), j.status,
        progress(j.processedRecordCount ?? 0, j.totalRecordCount ?? 0), formatTime(j.submitTime),
        j.outputDataConfig?.s3OutputDataConfig?.s3Uri ?? "")), "No invocation jobs.", 6);
      const openai = await json("/v1/batches?limit=100", { method: "GET" });
      fill($("openai-batches"), (openai.data ?? []).map((b) => row(
        el("code", { text: b.id }), b.endpoint, b.status,
        progress((b.request_counts?.completed ?? 0) + (b.request_counts?.failed ?? 0), b.request_counts?.total ?? 0),
        formatTime(b.created_at), b.output_file_id ?? "")), "No batches.", 6);
    };
    await load();
    setInterval(() => load().catch(showError), 3000);
  }

  const page = document.querySelector("[data-feature]")?.dataset.feature;
  const run = { guardrails, "knowledge-bases": knowledgeBases, jobs }[page];
  run?.().catch(showError);
})();
