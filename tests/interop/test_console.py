"""The web console in a real browser: Debian's Chromium driven by Playwright, against a real
`basalt serve` with SmolLM2, MiniLM and the DCGAN face generator.

The story a new operator and their first tenant live through: open `/` (local mode, no
sign-in), sign in with the admin token, create a tenant and a key, sign in as that tenant,
chat and watch the tokens stream in, see the usage chart count them, embed, generate an
image, try a guardrail, then have the key revoked and see the next request refused.
Screenshots of each page are written to $BASALT_ARTIFACTS/console (default
`artifacts/console`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

import pytest

from conftest import DCGAN, MINILM, SMOL, Server

ADMIN = "console-admin-token-5521"
ARTIFACTS = pathlib.Path(os.environ.get("BASALT_ARTIFACTS", "artifacts")) / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags a closed network needs: without them Chromium keeps calling home and failing.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
# Waiting by locators and `evaluate` only: the pages' CSP forbids the string evaluation
# `wait_for_function` would need, and the suite must not switch CSP off to pass.
expect.set_options(timeout=60_000)


def wait_until(page, predicate: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not page.evaluate(predicate):
        assert time.time() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def console_server():
    s = Server(args=["--admin-token", ADMIN], models=[SMOL, MINILM, DCGAN])
    yield s
    code = s.stop()
    assert code == 0, f"basalt serve exited with {code}:\n{s.logs()}"


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("BASALT_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM} (make test installs Debian's)")
        pytest.skip("Debian's chromium is not installed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Tab:
    """One signed-in browser context: its own cookies, console errors recorded."""

    def __init__(self, browser, base_url: str, viewport=DESKTOP) -> None:
        self.context = browser.new_context(viewport=viewport, base_url=base_url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def sign_in(tab: Tab, credential: str, operator: bool = False) -> None:
    tab.page.goto("/console/login" + ("?operator" if operator else ""))
    tab.page.fill("#credential", credential)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_url("**/console")


def knowledge_base(server: Server, key: str, tenant_id: str) -> str:
    """A knowledge base over MiniLM with one document, ingested; its id."""
    import httpx

    api = httpx.Client(base_url=server.base_url, headers={"authorization": f"Bearer {key}"}, timeout=120)
    docs = pathlib.Path(server.data_dir) / "buckets" / tenant_id / "console-kb"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "tea.txt").write_text("Green tea is brewed at about 80 degrees Celsius for two to "
                                  "three minutes. Black tea takes boiling water.")
    kb = api.put("/knowledgebases/", json={
        "name": "handbook", "roleArn": "arn:aws:iam::123456789012:role/kb",
        "knowledgeBaseConfiguration": {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MINILM}"}}})
    assert kb.status_code in (200, 202), kb.text
    kb_id = kb.json()["knowledgeBase"]["knowledgeBaseId"]
    ds = api.put(f"/knowledgebases/{kb_id}/datasources/", json={
        "name": "docs", "dataSourceConfiguration": {
            "type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::console-kb"}}})
    assert ds.status_code in (200, 202), ds.text
    ds_id = ds.json()["dataSource"]["dataSourceId"]
    jobs = f"/knowledgebases/{kb_id}/datasources/{ds_id}/ingestionjobs/"
    job = api.put(jobs, json={}).json()["ingestionJob"]
    deadline = time.time() + 120
    while job["status"] not in ("COMPLETE", "FAILED", "STOPPED"):
        assert time.time() < deadline, job
        time.sleep(0.2)
        job = api.get(jobs + job["ingestionJobId"]).json()["ingestionJob"]
    assert job["status"] == "COMPLETE", job
    return kb_id


def start_batch(server: Server, key: str) -> str:
    """An OpenAI batch of two chat completions, started; its id."""
    from openai import OpenAI

    client = OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
    lines = [json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": SMOL, "max_tokens": 8,
                                  "messages": [{"role": "user", "content": q}]}})
             for i, q in enumerate(["Say hello.", "Name a colour."])]
    f = client.files.create(file=("batch.jsonl", "\n".join(lines).encode()), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def send_chat(tab: Tab, text: str) -> None:
    page = tab.page
    page.fill("#message", text)
    page.click("#send")


def test_the_console_from_first_visit_to_revoked_key(console_server, chromium):
    base = console_server.base_url
    operator = Tab(chromium, base)
    page = operator.page

    # Local mode: `/` opens the console as the local user, no sign-in.
    page.goto("/")
    page.wait_for_url("**/console")
    assert page.locator(".who .badge").inner_text() == "local user"
    operator.shot("01-overview-local")

    # The operator signs in with the admin token; a wrong one is refused.
    page.goto("/console/login?operator")
    page.fill("#credential", "wrong-token")
    page.click("button[type=submit]")
    assert "neither the admin token nor a valid API key" in page.locator(".error").inner_text()
    operator.errors.clear()  # the browser logs the refused sign-in's 401
    sign_in(operator, ADMIN, operator=True)
    assert page.locator(".who .badge").inner_text() == "operator"
    operator.shot("02-overview-operator")

    # A tenant, with every model, and a key shown once.
    page.click("text=Tenants and keys")
    page.fill("input[name=name]", "acme")
    page.check("input[name=all_models]")
    page.click("text=Create tenant")
    page.wait_for_url("**/console/tenants/tnt_*")
    tenant_url = page.url
    page.fill("input[name=name] >> nth=0", "playground")
    page.click("text=Create API key")
    key = page.locator("#secret").inner_text()
    assert key.startswith("bsk-")
    operator.shot("03-new-key-shown-once")
    page.goto(tenant_url)
    assert key not in page.content()
    assert page.locator("#keys tbody tr").count() == 1
    operator.shot("04-tenant")

    # The tenant signs in with its key and chats; tokens appear as they stream.
    tenant = Tab(chromium, base)
    sign_in(tenant, key)
    assert page.locator(".who .badge").inner_text() == "operator"
    assert tenant.page.locator(".who .badge").inner_text() == "tenant"
    chat = tenant.page
    chat.goto("/console/chat")
    chat.select_option("#model", SMOL)
    chat.fill("#max_tokens", "48")
    chat.fill("#temperature", "0")
    # Record every text the answer shows while it streams.
    chat.evaluate("""() => {
        window.__seen = [];
        const panel = document.querySelector('#panel-1 .transcript');
        new MutationObserver(() => {
            const answer = panel.querySelector('.msg.assistant:last-child .answer');
            if (answer) window.__seen.push(answer.textContent);
        }).observe(panel, {subtree: true, childList: true, characterData: true});
    }""")
    send_chat(tenant, "Name three colours of the rainbow.")
    expect(chat.locator("#panel-1 .stats")).to_contain_text("tokens/s", timeout=120_000)
    seen = chat.evaluate("window.__seen.filter(t => t.length > 0)")
    distinct = list(dict.fromkeys(seen))
    assert len(distinct) >= 3, f"the answer did not stream: {distinct}"
    answer = chat.locator("#panel-1 .msg.assistant .answer").inner_text()
    assert answer.strip(), "no answer"
    stats = chat.locator("#panel-1 .stats").inner_text()
    assert "TTFT" in stats and "out" in stats
    output_tokens = int(chat.locator("#panel-1 .stats").get_attribute("data-output-tokens"))
    assert output_tokens > 0
    tenant.shot("05-chat")
    chat.click("#view-code")
    chat.click("#code .tabs button[data-lang=boto3]")
    assert "client.converse(" in chat.locator("#code-text").inner_text()
    tenant.shot("05-chat-code")

    # Two models side by side (the same one twice here: one chat model is served), in
    # JSON-schema mode: both answers parse and match the schema's shape.
    chat.click("#clear")
    chat.select_option("#model2", SMOL)
    chat.select_option("#mode", "json")
    chat.fill("#max_tokens", "64")
    send_chat(tenant, "Answer in JSON: what colour is the sky?")
    for panel in ("#panel-1", "#panel-2"):
        expect(chat.locator(f"{panel} .stats")).to_contain_text("tokens/s", timeout=120_000)
        text = chat.locator(f"{panel} .msg.assistant .answer").inner_text()
        assert isinstance(json.loads(text)["answer"], str), text
    tenant.shot("05-chat-compare-json")

    # Stop: a long answer cut short keeps what arrived.
    chat.click("#clear")
    chat.select_option("#model2", "")
    chat.select_option("#mode", "text")
    chat.fill("#max_tokens", "2000")
    chat.fill("#temperature", "1")
    send_chat(tenant, "Write a very long story about a lighthouse keeper.")
    expect(chat.locator("#panel-1 .stats")).to_contain_text("streaming", timeout=120_000)
    expect(chat.locator("#panel-1 .msg.assistant .answer")).not_to_be_empty()
    chat.click("#stop")
    expect(chat.locator("#panel-1 .stats")).to_have_text("stopped")
    assert chat.locator("#panel-1 .msg.assistant .answer").inner_text().strip()
    expect(chat.locator("#send")).to_be_enabled()

    # Model output is never HTML: the renderer turns a hostile answer into text.
    rendered = chat.evaluate("""() => {
        window.__xss = 0;
        const probe = '<img src=x onerror="window.__xss=1"> **bold** <script>window.__xss=2</script>\\n```\\n<svg onload=window.__xss=3>\\n```';
        const box = document.createElement('div');
        box.append(Basalt.renderMarkdown(probe));
        document.body.append(box);
        return {img: box.querySelectorAll('img, script, svg').length, strong: box.querySelectorAll('strong').length, text: box.textContent};
    }""")
    assert rendered["img"] == 0 and rendered["strong"] == 1
    assert "<img src=x" in rendered["text"]
    chat.wait_for_timeout(200)
    assert chat.evaluate("window.__xss") == 0

    # The usage page counts the chat's tokens, on its chart and in its table.
    usage = tenant.page
    usage.goto("/console/usage")
    assert int(usage.locator("#total-requests").inner_text()) >= 1
    assert int(usage.locator("#total-output").inner_text()) >= output_tokens
    assert usage.locator("#tokens-chart svg rect").count() >= 1
    assert SMOL in usage.locator("#usage-table").inner_text()
    tenant.shot("06-usage")

    # Embeddings: a similarity matrix of three texts.
    usage.goto("/console/embeddings")
    usage.click("#send")
    expect(usage.locator("#matrix tbody td")).to_have_count(9, timeout=60_000)
    diagonal = usage.locator("#matrix tbody tr >> nth=0").locator("td >> nth=0").inner_text()
    assert diagonal == "1.000"
    tenant.shot("07-embeddings")

    # An image, shown and downloadable.
    usage.goto("/console/images")
    usage.select_option("#model", DCGAN)
    usage.fill("#seed", "7")
    usage.click("#send")
    wait_until(usage, "document.getElementById('image').naturalWidth > 0")
    assert usage.locator("#download").get_attribute("href").startswith("data:image/png;base64,")
    tenant.shot("08-images")

    # A guardrail: created and tested on text through the Bedrock API.
    usage.goto("/console/guardrails")
    usage.fill("#g-name", "no-codenames")
    usage.fill("#g-words", "bluebird")
    usage.click("#guardrail-create button[type=submit]")
    expect(usage.locator("#guardrail-list tbody")).to_contain_text("no-codenames")
    usage.fill("#g-text", "Tell me about project bluebird.")
    usage.click("#guardrail-test button[type=submit]")
    expect(usage.locator("#g-action")).to_have_text("GUARDRAIL_INTERVENED")
    tenant.shot("09-guardrails")

    # A knowledge base (made through the Bedrock agent API), queried from its page: the
    # passages alone, then an answer from SmolLM2 with them.
    tenant_id = tenant_url.rsplit("/", 1)[1]
    kb_id = knowledge_base(console_server, key, tenant_id)
    usage.goto("/console/knowledge-bases")
    expect(usage.locator("#kb-list tbody")).to_contain_text(kb_id)
    usage.select_option("#kb-id", kb_id)
    usage.fill("#kb-text", "How hot should the water be for green tea?")
    usage.click("#kb-query button[type=submit]")
    expect(usage.locator("#kb-results li").first).to_contain_text("80 degrees")
    usage.select_option("#kb-model", SMOL)
    usage.click("#kb-query button[type=submit]")
    expect(usage.locator("#kb-answer")).to_be_visible(timeout=120_000)
    assert usage.locator("#kb-answer-text").inner_text().strip()
    tenant.shot("12-knowledge-bases")

    # A batch job, followed on the jobs page until it completes.
    batch_id = start_batch(console_server, key)
    usage.goto("/console/jobs")
    row = usage.locator("#openai-batches tbody tr", has_text=batch_id)
    expect(row).to_contain_text("completed", timeout=180_000)
    expect(row).to_contain_text("2 / 2")
    tenant.shot("13-jobs")

    for path, name in [("/console/models", "10-models"), ("/console/text", "11-text"),
                       ("/console/logs", "14-logs")]:
        usage.goto(path)
        usage.wait_for_load_state("networkidle")
        shown = [t for t in usage.locator(".error").all_inner_texts() if t.strip()]
        assert not shown, f"{path}: {shown}"
        tenant.shot(name)
    # No script error, no refused resource, no CSP violation on any page so far.
    assert not tenant.errors, tenant.errors

    # A tenant reaches no administration page.
    response = usage.goto(tenant_url)
    assert response.status == 404

    # At phone width the pages fit the screen.
    phone = Tab(chromium, base, viewport=PHONE)
    phone.context.add_cookies(tenant.context.cookies())
    for path in ["/console/chat", "/console/usage", "/console/models"]:
        phone.page.goto(path)
        width = phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width}px wide at phone width"
    phone.page.goto("/console/chat")
    phone.shot("15-chat-phone")
    phone.close()

    # The operator revokes the key; the tenant's next request is refused.
    page.goto(tenant_url)
    page.click("#keys button:has-text('Revoke')")
    page.wait_for_url(tenant_url)
    assert "revoked" in page.locator("#keys").inner_text()
    operator.shot("16-key-revoked")
    chat.goto("/console/chat")
    assert chat.url.endswith("/console/login"), "a revoked key's session still opens pages"
    tenant.shot("17-signed-out")

    # Operator's usage view counts the tenant's traffic too.
    page.goto("/console/usage")
    assert "acme" in page.locator("#usage-table").inner_text()
    assert "acme" in page.locator("#tenants-chart .legend").inner_text()
    assert page.locator("#tenants-chart svg rect").count() >= 1
    operator.shot("18-usage-operator")

    assert not operator.errors, operator.errors
    operator.close()
    tenant.close()


def test_a_revoked_key_is_refused_mid_session_in_the_playground(console_server, chromium):
    """The page stays open while the key is revoked: the next send shows the API's error."""
    import httpx

    admin = {"authorization": f"Bearer {ADMIN}"}
    created = httpx.post(f"{console_server.base_url}/admin/tenants", headers=admin,
                         json={"name": "beta", "models": ["*"]})
    assert created.status_code == 201, created.text
    key = httpx.post(f"{console_server.base_url}/admin/tenants/beta/keys", headers=admin, json={"name": "k"}).json()
    tab = Tab(chromium, console_server.base_url)
    sign_in(tab, key["key"])
    tab.page.goto("/console/chat")
    tab.page.select_option("#model", SMOL)
    tab.page.fill("#max_tokens", "4")
    send_chat(tab, "Hi")
    expect(tab.page.locator("#panel-1 .stats")).to_contain_text("tokens/s", timeout=120_000)
    revoked = httpx.delete(f"{console_server.base_url}/admin/tenants/beta/keys/{key['id']}", headers=admin)
    assert revoked.status_code == 204
    send_chat(tab, "Hi again")
    expect(tab.page.locator("#error")).to_contain_text("not valid")
    tab.shot("19-refused-after-revocation")
    tab.close()
