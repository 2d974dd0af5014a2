"""Knowledge bases through boto3's `bedrock-agent` and `bedrock-agent-runtime` clients: a
knowledge base over the default embedding model, an S3 data source in the tenant's bucket
(text, Markdown, HTML, CSV, PDF, a `.metadata.json` sidecar, a binary file that fails alone),
ingestion jobs with Bedrock's statistics (a second run re-embeds only what changed and
deletes what is gone), `Retrieve` with metadata filters and paging, and the errors: unknown
ids, a text model as the embedding model, a bucket outside the tenant's, bad filters.
LangChain's `AmazonKnowledgeBasesRetriever` reads the same knowledge base unchanged. Documents
also go in directly (`ingest_knowledge_base_documents`: inline text or bytes, or an object in a
bucket, with inline metadata), are listed, looked up and deleted."""

from __future__ import annotations

import json
import pathlib
import time

import pytest
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY_ID, MINILM, SECRET_ACCESS_KEY, SMOL
from test_bedrock_boto3 import client, error_code

EMBEDDING_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{MINILM}"

DOCS = {
    "tea.txt": "Green tea is brewed at about 80 degrees Celsius for two to three minutes. "
               "Black tea takes boiling water and steeps for four to five minutes.",
    "guides/bicycle.md": "# Fixing a flat tyre\n\nRemove the wheel, lever the tyre off the rim, "
                         "find the puncture in the inner tube and patch it.",
    "guides/volcano.html": "<html><body><h1>Volcanoes</h1><p>Basalt is a volcanic rock formed "
                           "from rapidly cooling lava rich in magnesium and iron.</p></body></html>",
    "planets.csv": "planet,moons\nMars,2\nJupiter,95\n",
}


@pytest.fixture(scope="module")
def agent(server):
    return client(server, service="bedrock-agent")


@pytest.fixture(scope="module")
def agent_runtime(server):
    return client(server, service="bedrock-agent-runtime")


def bucket(server, name: str) -> pathlib.Path:
    path = pathlib.Path(server.data_dir) / "buckets" / "operator" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def pdf_with(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, its cross-reference offsets as a writer
    computes them."""
    stream = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               "/Resources << /Font << /F1 5 0 R >> >> >>",
               f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    pdf, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(pdf)
    pdf += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    pdf += b"".join(f"{o:010} 00000 n \n".encode() for o in offsets)
    pdf += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return pdf


def ingest(agent, kb_id: str, ds_id: str) -> dict:
    job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    deadline = time.time() + 300
    while job["status"] not in ("COMPLETE", "FAILED", "STOPPED"):
        assert time.time() < deadline, job
        time.sleep(0.2)
        job = agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                      ingestionJobId=job["ingestionJobId"])["ingestionJob"]
    return job


def test_a_knowledge_base_from_a_bucket_end_to_end(server, agent, agent_runtime):
    root = bucket(server, "kb-docs")
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "tea.txt.metadata.json").write_text(json.dumps({"metadataAttributes": {"topic": "drinks", "year": 2024}}))
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not text")
    (root / "guides" / "manual.pdf").write_bytes(pdf_with("Service the boiler every twelve months."))

    kb = agent.create_knowledge_base(
        name="handbook", roleArn="arn:aws:iam::123456789012:role/kb",
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": EMBEDDING_ARN}},
        storageConfiguration={"type": "OPENSEARCH_SERVERLESS", "opensearchServerlessConfiguration": {
            "collectionArn": "arn:aws:aoss:us-east-1:123456789012:collection/x", "vectorIndexName": "i",
            "fieldMapping": {"vectorField": "v", "textField": "t", "metadataField": "m"}}},
    )["knowledgeBase"]
    kb_id = kb["knowledgeBaseId"]
    assert kb["status"] == "ACTIVE" and kb["knowledgeBaseArn"].endswith(f":knowledge-base/{kb_id}")
    assert kb_id in [k["knowledgeBaseId"] for k in agent.list_knowledge_bases()["knowledgeBaseSummaries"]]

    ds = agent.create_data_source(
        knowledgeBaseId=kb_id, name="docs",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::kb-docs"}},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "FIXED_SIZE",
            "fixedSizeChunkingConfiguration": {"maxTokens": 40, "overlapPercentage": 20}}},
    )["dataSource"]
    ds_id = ds["dataSourceId"]
    assert agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id)["dataSource"]["name"] == "docs"

    job = ingest(agent, kb_id, ds_id)
    stats = job["statistics"]
    assert job["status"] == "COMPLETE", job
    assert stats["numberOfDocumentsScanned"] == 6 and stats["numberOfNewDocumentsIndexed"] == 5, stats
    assert stats["numberOfMetadataDocumentsScanned"] == 1 and stats["numberOfDocumentsFailed"] == 1, stats
    assert any("photo.jpg" in r for r in job["failureReasons"]), job

    def retrieve(text: str, **config) -> list:
        return agent_runtime.retrieve(
            knowledgeBaseId=kb_id, retrievalQuery={"text": text},
            retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3, **config}},
        )["retrievalResults"]

    top = retrieve("How hot should the water be for green tea?")
    assert "80 degrees" in top[0]["content"]["text"], top
    assert top[0]["location"] == {"type": "S3", "s3Location": {"uri": "s3://kb-docs/tea.txt"}}
    assert top[0]["metadata"]["topic"] == "drinks" and top[0]["metadata"]["year"] == 2024
    assert top[0]["metadata"]["x-amz-bedrock-kb-source-uri"] == "s3://kb-docs/tea.txt"
    assert top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert "lava" in retrieve("What kind of rock is basalt?")[0]["content"]["text"]
    assert "twelve months" in retrieve("How often should the boiler be serviced?")[0]["content"]["text"]
    assert "Jupiter" in " ".join(r["content"]["text"] for r in retrieve("How many moons does Jupiter have?"))
    # The filter applies inside the search: only the tagged document can come back.
    only = retrieve("volcanic rock", filter={"equals": {"key": "topic", "value": "drinks"}})
    assert {r["location"]["s3Location"]["uri"] for r in only} == {"s3://kb-docs/tea.txt"}
    # HYBRID: keywords and vectors fused; a rare exact word finds its passage.
    hybrid = retrieve("Jupiter moons", overrideSearchType="HYBRID")
    assert "Jupiter" in hybrid[0]["content"]["text"], hybrid
    # Paging: the second page continues where the first stopped.
    first = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "tea"},
                                   retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 2}})
    second = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "tea"}, nextToken=first["nextToken"],
                                    retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 2}})
    assert not {r["content"]["text"] for r in first["retrievalResults"]} & {r["content"]["text"] for r in second["retrievalResults"]}

    # Retrieve and generate: an answer from the chat model, cited to the passages.
    rag_config = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": kb_id, "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{SMOL}",
        "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 3}},
        "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": 48, "temperature": 0}}}}}
    answer = agent_runtime.retrieve_and_generate(
        input={"text": "At what temperature is green tea brewed?"}, retrieveAndGenerateConfiguration=rag_config)
    text = answer["output"]["text"]
    assert text and answer["sessionId"], answer
    assert answer["citations"], answer
    for citation in answer["citations"]:
        part = citation["generatedResponsePart"]["textResponsePart"]
        assert text[part["span"]["start"]:part["span"]["end"] + 1] == part["text"], (text, part)
        assert citation["retrievedReferences"], citation
    cited = {r["location"]["s3Location"]["uri"] for c in answer["citations"] for r in c["retrievedReferences"]}
    assert "s3://kb-docs/tea.txt" in cited, answer
    # The streamed variant: the same answer as output events, then the same citations.
    streamed = agent_runtime.retrieve_and_generate_stream(
        input={"text": "At what temperature is green tea brewed?"}, retrieveAndGenerateConfiguration=rag_config)
    assert streamed["sessionId"] and streamed["sessionId"] != answer["sessionId"]
    events = list(streamed["stream"])
    pieces = [e["output"]["text"] for e in events if "output" in e]
    cites = [e["citation"] for e in events if "citation" in e]
    assert len(pieces) > 1 and "".join(pieces) == text, (pieces, text)
    assert [c["generatedResponsePart"] for c in cites] == [c["generatedResponsePart"] for c in answer["citations"]]
    assert all("output" not in e for e in events[len(pieces):]), "citations come after the text"
    # A follow-up in the same session; a session that does not exist is an error.
    follow = agent_runtime.retrieve_and_generate(
        input={"text": "And black tea?"}, sessionId=answer["sessionId"], retrieveAndGenerateConfiguration=rag_config)
    assert follow["sessionId"] == answer["sessionId"] and follow["output"]["text"]
    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve_and_generate(input={"text": "x"}, sessionId="00000000-0000-0000-0000-000000000000",
                                            retrieveAndGenerateConfiguration=rag_config)
    assert error_code(e) == "ResourceNotFoundException"
    # A custom prompt template must hold the search results.
    custom = json.loads(json.dumps(rag_config))
    custom["knowledgeBaseConfiguration"]["generationConfiguration"]["promptTemplate"] = {
        "textPromptTemplate": "Answer $query$ briefly."}
    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve_and_generate(input={"text": "tea?"}, retrieveAndGenerateConfiguration=custom)
    assert error_code(e) == "ValidationException"

    # Re-ingestion: one file changed, one removed, the rest untouched.
    (root / "tea.txt").write_text(DOCS["tea.txt"] + " Oolong sits between the two.")
    (root / "planets.csv").unlink()
    again = ingest(agent, kb_id, ds_id)["statistics"]
    assert again["numberOfModifiedDocumentsIndexed"] == 1 and again["numberOfNewDocumentsIndexed"] == 0, again
    assert again["numberOfDocumentsDeleted"] == 1, again
    assert all("Jupiter" not in r["content"]["text"] for r in retrieve("How many moons does Jupiter have?"))
    jobs = agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJobSummaries"]
    assert len(jobs) == 2

    agent.delete_knowledge_base(knowledgeBaseId=kb_id)
    with pytest.raises(ClientError) as e:
        agent.get_knowledge_base(knowledgeBaseId=kb_id)
    assert error_code(e) == "ResourceNotFoundException"


def test_bad_knowledge_base_requests_are_bedrocks_errors(server, agent, agent_runtime):
    with pytest.raises(ClientError) as e:
        agent.create_knowledge_base(
            name="wrong-model", roleArn="r",
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{SMOL}"}})
    assert error_code(e) == "ValidationException" and "embedding model" in str(e.value)
    for call in (lambda: agent.get_knowledge_base(knowledgeBaseId="NOSUCHKB00"),
                 lambda: agent_runtime.retrieve(knowledgeBaseId="NOSUCHKB00", retrievalQuery={"text": "x"}),
                 lambda: agent.start_ingestion_job(knowledgeBaseId="NOSUCHKB00", dataSourceId="NOSUCHDS00")):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "ResourceNotFoundException"
    kb_id = agent.create_knowledge_base(
        name="errors", roleArn="r",
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": EMBEDDING_ARN}})["knowledgeBase"]["knowledgeBaseId"]
    with pytest.raises(ClientError) as e:
        agent.create_data_source(knowledgeBaseId=kb_id, name="escape", dataSourceConfiguration={
            "type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::kb-docs", "inclusionPrefixes": ["../../x"]}})
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "tea"},
                               retrievalConfiguration={"vectorSearchConfiguration": {
                                   "filter": {"greaterThan": {"key": "year", "value": "2020"}}}})
    assert error_code(e) == "ValidationException" and "numbers" in str(e.value)


def test_langchains_knowledge_base_retriever(server, agent):
    from langchain_aws.retrievers import AmazonKnowledgeBasesRetriever
    from pydantic import SecretStr
    root = bucket(server, "kb-langchain")
    (root / "bicycle.md").write_text(DOCS["guides/bicycle.md"])
    (root / "volcano.html").write_text(DOCS["guides/volcano.html"])
    kb_id = agent.create_knowledge_base(
        name="langchain", roleArn="r",
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": EMBEDDING_ARN}})["knowledgeBase"]["knowledgeBaseId"]
    ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="docs", dataSourceConfiguration={
        "type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::kb-langchain"}})["dataSource"]["dataSourceId"]
    assert ingest(agent, kb_id, ds_id)["statistics"]["numberOfNewDocumentsIndexed"] == 2
    retriever = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb_id, endpoint_url=server.base_url, region_name="us-east-1",
        aws_access_key_id=SecretStr(ACCESS_KEY_ID), aws_secret_access_key=SecretStr(SECRET_ACCESS_KEY),
        retrieval_config={"vectorSearchConfiguration": {"numberOfResults": 1}})
    docs = retriever.invoke("How do I repair a punctured bicycle tyre?")
    assert len(docs) == 1 and "puncture" in docs[0].page_content
    assert docs[0].metadata["location"]["s3Location"]["uri"] == "s3://kb-langchain/bicycle.md"
    assert docs[0].metadata["score"] > 0


def test_documents_put_in_directly(server, agent, agent_runtime):
    kb_id = agent.create_knowledge_base(
        name="direct", roleArn="r",
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": EMBEDDING_ARN}})["knowledgeBase"]["knowledgeBaseId"]
    ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="inline", dataSourceConfiguration={
        "type": "CUSTOM"})["dataSource"]["dataSourceId"]
    (bucket(server, "kb-direct") / "tyre.md").write_text(DOCS["guides/bicycle.md"])

    def custom(doc_id: str, content: dict, source_type: str = "IN_LINE", metadata: list | None = None) -> dict:
        doc = {"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": doc_id}, "sourceType": source_type, **content}}}
        if metadata is not None:
            doc["metadata"] = {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": metadata}
        return doc

    details = agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=[
        custom("tea", {"inlineContent": {"type": "TEXT", "textContent": {"data": DOCS["tea.txt"]}}},
               metadata=[{"key": "topic", "value": {"type": "STRING", "stringValue": "drinks"}},
                         {"key": "year", "value": {"type": "NUMBER", "numberValue": 2024}}]),
        custom("volcano", {"inlineContent": {"type": "BYTE", "byteContent": {
            "mimeType": "text/html", "data": DOCS["guides/volcano.html"].encode()}}}),
        custom("tyre", {"s3Location": {"uri": "s3://kb-direct/tyre.md"}}, source_type="S3_LOCATION"),
        custom("manual", {"inlineContent": {"type": "BYTE", "byteContent": {
            "mimeType": "application/pdf", "data": pdf_with("The warranty covers the engine for seven years.")}}}),
        custom("broken", {"inlineContent": {"type": "BYTE", "byteContent": {
            "mimeType": "application/pdf", "data": b"%PDF-1.4 not really"}}}),
        custom("photo", {"inlineContent": {"type": "BYTE", "byteContent": {
            "mimeType": "image/png", "data": b"\x89PNG"}}}),
    ])["documentDetails"]
    assert [(d["identifier"]["custom"]["id"], d["status"]) for d in details] == [
        ("tea", "INDEXED"), ("volcano", "INDEXED"), ("tyre", "INDEXED"), ("manual", "INDEXED"),
        ("broken", "FAILED"), ("photo", "FAILED")], details
    assert "PDF" in details[4]["statusReason"] and "image/png" in details[5]["statusReason"], details
    warranty = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "How long is the warranty?"},
                                      retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 1}})
    assert "seven years" in warranty["retrievalResults"][0]["content"]["text"], warranty

    top = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "What rock forms from lava?"},
                                 retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 1}})
    assert top["retrievalResults"][0]["location"] == {"type": "CUSTOM", "customDocumentLocation": {"id": "volcano"}}
    drinks = agent_runtime.retrieve(
        knowledgeBaseId=kb_id, retrievalQuery={"text": "lava"},
        retrievalConfiguration={"vectorSearchConfiguration": {"filter": {"andAll": [
            {"equals": {"key": "topic", "value": "drinks"}}, {"greaterThanOrEquals": {"key": "year", "value": 2024}}]}}})
    assert [r["location"]["customDocumentLocation"]["id"] for r in drinks["retrievalResults"]] == ["tea"]

    listed = agent.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id)["documentDetails"]
    assert sorted(d["identifier"]["custom"]["id"] for d in listed) == ["manual", "tea", "tyre", "volcano"]
    ids = [{"dataSourceType": "CUSTOM", "custom": {"id": i}} for i in ("tea", "nope")]
    got = agent.get_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=ids)
    assert [d["status"] for d in got["documentDetails"]] == ["INDEXED", "NOT_FOUND"]
    deleted = agent.delete_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=ids)
    assert [d["status"] for d in deleted["documentDetails"]] == ["DELETING", "NOT_FOUND"]
    got = agent.get_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=ids[:1])
    assert got["documentDetails"][0]["status"] == "NOT_FOUND"
    with pytest.raises(ClientError) as e:
        agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    assert error_code(e) == "ValidationException"

    # Hierarchical chunking: small children are searched, their parents returned, once each.
    nested = agent.create_data_source(
        knowledgeBaseId=kb_id, name="nested", dataSourceConfiguration={"type": "CUSTOM"},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
                "levelConfigurations": [{"maxTokens": 60}, {"maxTokens": 12}], "overlapTokens": 2}}},
    )["dataSource"]["dataSourceId"]
    facts = " ".join(f"Fact {i}: the {animal} lives in the {place}." for i, (animal, place) in enumerate(
        [("penguin", "Antarctic"), ("camel", "desert"), ("otter", "river"), ("yak", "Himalaya"),
         ("koala", "eucalyptus forest"), ("orca", "ocean"), ("llama", "Andes"), ("lynx", "taiga")] * 2))
    agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=nested, documents=[
        custom("animals", {"inlineContent": {"type": "TEXT", "textContent": {"data": facts}}})])
    hits = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "Where does the yak live?"},
                                  retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 5}})
    texts = [h["content"]["text"] for h in hits["retrievalResults"]
             if h["location"]["customDocumentLocation"]["id"] == "animals"]
    assert texts and "yak" in texts[0] and len(texts[0].split()) > 12, texts
    assert len(texts) == len(set(texts)), "a parent is returned once"
    # Semantic chunking: passages break where the subject changes.
    semantic = agent.create_data_source(
        knowledgeBaseId=kb_id, name="semantic", dataSourceConfiguration={"type": "CUSTOM"},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "SEMANTIC", "semanticChunkingConfiguration": {
                "maxTokens": 200, "bufferSize": 0, "breakpointPercentileThreshold": 80}}},
    )["dataSource"]["dataSourceId"]
    mixed = ("Green tea is steeped briefly in hot water. Black tea is steeped longer. Tea leaves are dried. "
             "Volcanoes erupt molten lava. Basalt forms when lava cools. Magma rises through the crust.")
    agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=semantic, documents=[
        custom("mixed", {"inlineContent": {"type": "TEXT", "textContent": {"data": mixed}}})])
    hits = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "How does basalt form?"},
                                  retrievalConfiguration={"vectorSearchConfiguration": {
                                      "numberOfResults": 10,
                                      "filter": {"equals": {"key": "x-amz-bedrock-kb-data-source-id", "value": semantic}}}})
    found = [h["content"]["text"] for h in hits["retrievalResults"]]
    assert len(found) >= 2 and "Basalt forms" in found[0] and "tea" not in found[0].lower(), found
    with pytest.raises(ClientError) as e:
        agent.create_data_source(knowledgeBaseId=kb_id, name="bad", dataSourceConfiguration={"type": "CUSTOM"},
                                 vectorIngestionConfiguration={"chunkingConfiguration": {
                                     "chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
                                         "levelConfigurations": [{"maxTokens": 10}, {"maxTokens": 50}],
                                         "overlapTokens": 2}}})
    assert error_code(e) == "ValidationException"


def test_an_ingestion_job_survives_kill_9_of_its_server():
    from conftest import Server
    first = Server(models=[MINILM])
    try:
        agent = client(first, service="bedrock-agent")
        root = bucket(first, "kb-resume")
        for i in range(40):
            (root / f"note-{i:02d}.txt").write_text(
                f"Note {i}. " + " ".join(f"The {w} of item {i} is recorded here." for w in
                                        ("colour", "weight", "size", "origin", "price", "owner")))
        kb_id = agent.create_knowledge_base(
            name="resume", roleArn="r", knowledgeBaseConfiguration={"type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBEDDING_ARN}})["knowledgeBase"]["knowledgeBaseId"]
        ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="notes", dataSourceConfiguration={
            "type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::kb-resume"}})["dataSource"]["dataSourceId"]
        job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
        index_dir = pathlib.Path(first.data_dir) / "knowledge-bases" / "operator" / kb_id
        deadline = time.time() + 120
        while len(list(index_dir.glob("*.json"))) < 3:
            assert time.time() < deadline, "the job indexed nothing"
            time.sleep(0.05)
    finally:
        first.proc.kill()  # SIGKILL, mid-job
        first.proc.wait()
    indexed_before = len(list(index_dir.glob("*.json")))
    assert indexed_before < 40, "the job finished before it was killed; make it longer"
    second = Server(models=[MINILM], data_dir=first.data_dir)
    try:
        agent = client(second, service="bedrock-agent")
        deadline = time.time() + 300
        while (job := agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                              ingestionJobId=job_id)["ingestionJob"])["status"] != "COMPLETE":
            assert job["status"] in ("STARTING", "IN_PROGRESS") and time.time() < deadline, job
            time.sleep(0.2)
        stats = job["statistics"]
        # Documents indexed before the kill are unchanged: not embedded again.
        assert stats["numberOfDocumentsScanned"] == 40, stats
        assert stats["numberOfNewDocumentsIndexed"] <= 40 - indexed_before + 1, (stats, indexed_before)
        assert len(list(index_dir.glob("*.json"))) == 40 and not list(index_dir.glob("*.tmp"))
        runtime = client(second, service="bedrock-agent-runtime")
        hits = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "Note 39 colour"},
                                retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 100}})
        assert {h["location"]["s3Location"]["uri"] for h in hits["retrievalResults"]} >= {"s3://kb-resume/note-39.txt"}
    finally:
        assert second.stop() == 0


def test_a_large_knowledge_base_is_searched_through_its_graph():
    """With `--knowledge-graph-from 30`, forty passages are enough for the approximate graph:
    it is built off the index's lock once the knowledge base grows past 30, follows inserts
    and deletes, answers filtered searches inside the walk, and is built again when the
    server reopens the knowledge base."""
    from conftest import OPERATOR_KEYS, Server

    animals = ["otter", "heron", "badger", "lynx", "marten", "plover", "newt", "vole"]
    cities = ["Oslo", "Lima", "Perth", "Quito", "Hanoi"]
    facts = {f"fact-{i:02d}": f"The {animals[i % 8]} called Number {i} lives in {cities[i % 5]} "
                              f"and eats {i * 3} grams of food a day." for i in range(40)}

    def graph_builds(server) -> int:
        return server.logs().count("knowledge base graph built")

    first = Server(models=[MINILM], args=[*OPERATOR_KEYS, "--knowledge-graph-from", "30"])
    try:
        agent, runtime = client(first, service="bedrock-agent"), client(first, service="bedrock-agent-runtime")
        kb_id = agent.create_knowledge_base(
            name="large", roleArn="r", knowledgeBaseConfiguration={"type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBEDDING_ARN}})["knowledgeBase"]["knowledgeBaseId"]
        ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="facts", dataSourceConfiguration={
            "type": "CUSTOM"})["dataSource"]["dataSourceId"]
        items = list(facts.items())
        for batch in (items[:20], items[20:]):
            details = agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=[
                {"content": {"dataSourceType": "CUSTOM", "custom": {
                    "customDocumentIdentifier": {"id": doc_id}, "sourceType": "IN_LINE",
                    "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}},
                 "metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
                     {"key": "n", "value": {"type": "NUMBER", "numberValue": int(doc_id[5:])}}]}}
                for doc_id, text in batch])["documentDetails"]
            assert {d["status"] for d in details} == {"INDEXED"}, details
        deadline = time.time() + 60
        while graph_builds(first) < 1:
            assert time.time() < deadline, first.logs()
            time.sleep(0.1)

        def top(text: str, k: int = 1, filter: dict | None = None) -> list[str]:
            search = {"numberOfResults": k, **({"filter": filter} if filter else {})}
            found = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text},
                                     retrievalConfiguration={"vectorSearchConfiguration": search})
            return [r["location"]["customDocumentLocation"]["id"] for r in found["retrievalResults"]]

        for doc_id in ("fact-00", "fact-17", "fact-33"):
            assert top(facts[doc_id]) == [doc_id]
        # 35 documents pass: walked inside the graph; each result passes, and there are 10.
        walked = top(facts["fact-02"], k=10, filter={"greaterThanOrEquals": {"key": "n", "value": 5}})
        assert len(walked) == 10 and all(int(d[5:]) >= 5 for d in walked), walked
        assert "fact-02" not in walked
        agent.delete_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=[
            {"dataSourceType": "CUSTOM", "custom": {"id": "fact-17"}}])
        assert "fact-17" not in top(facts["fact-17"], k=5)
    finally:
        assert first.stop() == 0
    second = Server(models=[MINILM], data_dir=first.data_dir,
                    args=[*OPERATOR_KEYS, "--knowledge-graph-from", "30"])
    try:
        runtime = client(second, service="bedrock-agent-runtime")
        found = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": facts["fact-33"]},
                                 retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 1}})
        assert found["retrievalResults"][0]["location"]["customDocumentLocation"]["id"] == "fact-33"
        deadline = time.time() + 60
        while graph_builds(second) < 1:
            assert time.time() < deadline, second.logs()
            time.sleep(0.1)
    finally:
        assert second.stop() == 0


def test_failures_along_the_way_are_reported_not_fatal(server, agent, agent_runtime):
    """An unknown generation model is the caller's error; a document over 50 MiB fails alone
    in its job; a knowledge base deleted while its job runs takes the job and its files
    with it, and the server goes on."""
    kb_id = agent.create_knowledge_base(
        name="failures", roleArn="r", knowledgeBaseConfiguration={"type": "VECTOR",
        "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBEDDING_ARN}})["knowledgeBase"]["knowledgeBaseId"]
    root = bucket(server, "kb-failures")
    (root / "tea.txt").write_text(DOCS["tea.txt"])
    with open(root / "huge.txt", "wb") as f:
        f.truncate((50 << 20) + 1)
    ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="failures", dataSourceConfiguration={
        "type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::kb-failures"}})["dataSource"]["dataSourceId"]
    job = ingest(agent, kb_id, ds_id)
    assert job["status"] == "COMPLETE", job
    stats = job["statistics"]
    assert (stats["numberOfDocumentsScanned"], stats["numberOfNewDocumentsIndexed"],
            stats["numberOfDocumentsFailed"]) == (2, 1, 1), stats
    assert any("50 MiB" in reason for reason in job.get("failureReasons", [])), job

    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve_and_generate(input={"text": "How hot for green tea?"}, retrieveAndGenerateConfiguration={
            "type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
                "knowledgeBaseId": kb_id,
                "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/no.such-model-v1"}})
    assert error_code(e) in ("ValidationException", "ResourceNotFoundException"), e.value
    assert "no.such-model-v1" in str(e.value)

    # Deleted mid-job: forty documents take a while to embed.
    for i in range(40):
        (root / f"note-{i:02d}.txt").write_text(f"Note {i}: " + "the same words again. " * 40)
    job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    index_dir = pathlib.Path(server.data_dir) / "knowledge-bases" / "operator" / kb_id
    agent.delete_knowledge_base(knowledgeBaseId=kb_id)
    with pytest.raises(ClientError) as e:
        agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)
    assert error_code(e) == "ResourceNotFoundException"
    deadline = time.time() + 60
    # The job notices and stops writing: the knowledge base's files stay gone.
    while index_dir.exists():
        assert time.time() < deadline, list(index_dir.iterdir())
        time.sleep(0.2)
    time.sleep(2)
    assert not index_dir.exists(), list(index_dir.iterdir())
    assert kb_id not in [k["knowledgeBaseId"] for k in agent.list_knowledge_bases()["knowledgeBaseSummaries"]]
    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "note"})
    assert error_code(e) == "ResourceNotFoundException"
