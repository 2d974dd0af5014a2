//! Knowledge bases as data: the `bedrock-agent` client's knowledge base, data source and
//! ingestion job operations, and the `bedrock-agent-runtime` client's `Retrieve`. Member
//! names are botocore's (`bedrock-agent/2023-06-05`, `bedrock-agent-runtime/2023-07-26`).
//! Configuration Basalt does not act on (storage, encryption, parsing) is kept as sent and
//! echoed back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `CreateKnowledgeBase` (`PUT /knowledgebases/`); also `UpdateKnowledgeBase`'s body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKnowledgeBase {
    pub name: String,
    pub description: Option<String>,
    pub role_arn: String,
    pub knowledge_base_configuration: KnowledgeBaseConfiguration,
    pub storage_configuration: Option<Value>,
    pub client_token: Option<String>,
    pub tags: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeBaseConfiguration {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_knowledge_base_configuration: Option<VectorConfiguration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorConfiguration {
    pub embedding_model_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model_configuration: Option<Value>,
}

/// A knowledge base as `Get` returns it (and as it is stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeBase {
    pub knowledge_base_id: String,
    pub name: String,
    pub knowledge_base_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub role_arn: String,
    pub knowledge_base_configuration: KnowledgeBaseConfiguration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_configuration: Option<Value>,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

impl KnowledgeBase {
    pub fn summary(&self) -> Value {
        let mut s = serde_json::json!({
            "knowledgeBaseId": self.knowledge_base_id,
            "name": self.name,
            "status": self.status,
            "updatedAt": self.updated_at,
        });
        if let (Some(d), Some(o)) = (&self.description, s.as_object_mut()) {
            o.insert("description".into(), Value::String(d.clone()));
        }
        s
    }
}

/// `CreateDataSource` (`PUT /knowledgebases/{id}/datasources/`); also `UpdateDataSource`'s.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDataSource {
    pub name: String,
    pub description: Option<String>,
    pub data_source_configuration: DataSourceConfiguration,
    pub data_deletion_policy: Option<String>,
    pub server_side_encryption_configuration: Option<Value>,
    pub vector_ingestion_configuration: Option<VectorIngestionConfiguration>,
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceConfiguration {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_configuration: Option<S3DataSourceConfiguration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3DataSourceConfiguration {
    pub bucket_arn: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_prefixes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket_owner_account_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorIngestionConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunking_configuration: Option<ChunkingConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parsing_configuration: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_transformation_configuration: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_enrichment_configuration: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkingConfiguration {
    pub chunking_strategy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_size_chunking_configuration: Option<FixedSizeChunking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchical_chunking_configuration: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic_chunking_configuration: Option<Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedSizeChunking {
    pub max_tokens: u32,
    pub overlap_percentage: u32,
}

/// A data source as `Get` returns it (and as it is stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    pub knowledge_base_id: String,
    pub data_source_id: String,
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub data_source_configuration: DataSourceConfiguration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_side_encryption_configuration: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_ingestion_configuration: Option<VectorIngestionConfiguration>,
    pub data_deletion_policy: String,
    pub created_at: String,
    pub updated_at: String,
}

impl DataSource {
    pub fn summary(&self) -> Value {
        let mut s = serde_json::json!({
            "knowledgeBaseId": self.knowledge_base_id,
            "dataSourceId": self.data_source_id,
            "name": self.name,
            "status": self.status,
            "updatedAt": self.updated_at,
        });
        if let (Some(d), Some(o)) = (&self.description, s.as_object_mut()) {
            o.insert("description".into(), Value::String(d.clone()));
        }
        s
    }
}

/// `StartIngestionJob`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartIngestionJob {
    pub description: Option<String>,
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestionJobStatistics {
    pub number_of_documents_scanned: u64,
    pub number_of_metadata_documents_scanned: u64,
    pub number_of_new_documents_indexed: u64,
    pub number_of_modified_documents_indexed: u64,
    pub number_of_metadata_documents_modified: u64,
    pub number_of_documents_deleted: u64,
    pub number_of_documents_failed: u64,
}

/// An ingestion job as `Get` returns it (and as it is stored); `List` returns the same
/// members less `failureReasons`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestionJob {
    pub knowledge_base_id: String,
    pub data_source_id: String,
    pub ingestion_job_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: String,
    pub statistics: IngestionJobStatistics,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_reasons: Vec<String>,
    pub started_at: String,
    pub updated_at: String,
}

impl IngestionJob {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETE" | "FAILED" | "STOPPED")
    }
}

/// The `List*` operations' body: paging only (filters and sorting are not read).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRequest {
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

/// `Retrieve` (`POST /knowledgebases/{id}/retrieve`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveRequest {
    pub retrieval_query: RetrievalQuery,
    #[serde(default)]
    pub retrieval_configuration: RetrievalConfiguration,
    pub next_token: Option<String>,
    pub guardrail_configuration: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalQuery {
    pub text: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalConfiguration {
    #[serde(default)]
    pub vector_search_configuration: VectorSearchConfiguration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorSearchConfiguration {
    pub number_of_results: Option<usize>,
    pub override_search_type: Option<String>,
    pub filter: Option<Value>,
}

/// One `retrievalResults` item.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalResult {
    pub content: RetrievalContent,
    pub location: RetrievalLocation,
    pub score: f64,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetrievalContent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

/// Where a passage came from: a bucket object or a custom document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalLocation {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_location: Option<Uri>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_document_location: Option<CustomId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Uri {
    pub uri: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomId {
    pub id: String,
}

impl RetrievalLocation {
    pub fn of(id: &str, from_bucket: bool) -> Self {
        if from_bucket {
            Self {
                kind: "S3",
                s3_location: Some(Uri {
                    uri: id.to_string(),
                }),
                custom_document_location: None,
            }
        } else {
            Self {
                kind: "CUSTOM",
                s3_location: None,
                custom_document_location: Some(CustomId { id: id.to_string() }),
            }
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveResponse {
    pub retrieval_results: Vec<RetrievalResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `IngestKnowledgeBaseDocuments` (`PUT …/datasources/{id}/documents`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestDocuments {
    pub documents: Vec<KnowledgeBaseDocument>,
    pub client_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct KnowledgeBaseDocument {
    pub content: DocumentContent,
    pub metadata: Option<DocumentMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentContent {
    pub data_source_type: String,
    pub custom: Option<CustomContent>,
    pub s3: Option<S3Content>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomContent {
    pub custom_document_identifier: CustomIdIn,
    pub source_type: String,
    pub s3_location: Option<UriIn>,
    pub inline_content: Option<InlineContent>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Content {
    pub s3_location: UriIn,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UriIn {
    pub uri: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineContent {
    #[serde(rename = "type")]
    pub kind: String,
    pub text_content: Option<TextContent>,
    pub byte_content: Option<ByteContent>,
}

#[derive(Debug, Deserialize)]
pub struct TextContent {
    pub data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ByteContent {
    pub mime_type: String,
    /// Base64, as boto3 sends a blob.
    pub data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentMetadata {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub inline_attributes: Vec<MetadataAttribute>,
    pub s3_location: Option<UriIn>,
}

#[derive(Debug, Deserialize)]
pub struct MetadataAttribute {
    pub key: String,
    pub value: MetadataValue,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataValue {
    #[serde(rename = "type")]
    pub kind: String,
    pub number_value: Option<f64>,
    pub boolean_value: Option<bool>,
    pub string_value: Option<String>,
    pub string_list_value: Option<Vec<String>>,
}

impl MetadataValue {
    /// The value as JSON, if the member its type names is there.
    pub fn to_json(&self) -> Option<Value> {
        match self.kind.as_str() {
            "NUMBER" => self
                .number_value
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            "BOOLEAN" => self.boolean_value.map(Value::Bool),
            "STRING" => self.string_value.clone().map(Value::String),
            "STRING_LIST" => self
                .string_list_value
                .clone()
                .map(|l| Value::Array(l.into_iter().map(Value::String).collect())),
            _ => None,
        }
    }
}

/// A document's identifier: a custom id or a bucket URI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentIdentifier {
    pub data_source_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomIdIn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<UriIn>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomIdIn {
    pub id: String,
}

impl DocumentIdentifier {
    /// The id the index knows the document by, and whether it is a bucket URI.
    pub fn key(&self) -> Option<(String, bool)> {
        match self.data_source_type.as_str() {
            "CUSTOM" => self.custom.as_ref().map(|c| (c.id.clone(), false)),
            "S3" => self.s3.as_ref().map(|s| (s.uri.clone(), true)),
            _ => None,
        }
    }

    pub fn of(id: &str, from_bucket: bool) -> Self {
        if from_bucket {
            Self {
                data_source_type: "S3".into(),
                custom: None,
                s3: Some(UriIn {
                    uri: id.to_string(),
                }),
            }
        } else {
            Self {
                data_source_type: "CUSTOM".into(),
                custom: Some(CustomIdIn { id: id.to_string() }),
                s3: None,
            }
        }
    }
}

/// `DeleteKnowledgeBaseDocuments` and `GetKnowledgeBaseDocuments`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentIdentifiers {
    pub document_identifiers: Vec<DocumentIdentifier>,
    pub client_token: Option<String>,
}

/// One `documentDetails` item.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentDetail {
    pub knowledge_base_id: String,
    pub data_source_id: String,
    pub status: &'static str,
    pub identifier: DocumentIdentifier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// `RetrieveAndGenerate` (`POST /retrieveAndGenerate`) and its stream's request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveAndGenerateRequest {
    pub input: RagInput,
    pub retrieve_and_generate_configuration: Option<RagConfiguration>,
    pub session_id: Option<String>,
    pub session_configuration: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct RagInput {
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RagConfiguration {
    #[serde(rename = "type")]
    pub kind: String,
    pub knowledge_base_configuration: Option<KnowledgeBaseRagConfiguration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeBaseRagConfiguration {
    pub knowledge_base_id: String,
    pub model_arn: String,
    #[serde(default)]
    pub retrieval_configuration: RetrievalConfiguration,
    #[serde(default)]
    pub generation_configuration: GenerationConfiguration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfiguration {
    pub prompt_template: Option<PromptTemplate>,
    #[serde(default)]
    pub inference_config: RagInferenceConfig,
    pub guardrail_configuration: Option<RagGuardrail>,
    pub additional_model_request_fields: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptTemplate {
    pub text_prompt_template: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RagInferenceConfig {
    pub text_inference_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RagGuardrail {
    pub guardrail_id: String,
    pub guardrail_version: String,
}

/// A reference a citation carries: a retrieved passage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievedReference {
    pub content: RetrievalContent,
    pub location: RetrievalLocation,
    pub metadata: Map<String, Value>,
}

/// One cited part of the answer: its text, where it lies in the output (`start` and `end`
/// are character offsets, `end` inclusive as Bedrock reports it), and its passages.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Citation {
    pub generated_response_part: GeneratedResponsePart,
    pub retrieved_references: Vec<RetrievedReference>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedResponsePart {
    pub text_response_part: TextResponsePart,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextResponsePart {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveAndGenerateResponse {
    pub output: RagOutput,
    pub citations: Vec<Citation>,
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrail_action: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct RagOutput {
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::parse_json;

    #[test]
    fn requests_read_as_boto3_sends_them() {
        let kb: CreateKnowledgeBase = parse_json(
            br#"{"name":"docs","roleArn":"arn:aws:iam::1:role/kb",
                 "knowledgeBaseConfiguration":{"type":"VECTOR","vectorKnowledgeBaseConfiguration":
                   {"embeddingModelArn":"arn:aws:bedrock:us-east-1::foundation-model/m"}},
                 "storageConfiguration":{"type":"OPENSEARCH_SERVERLESS"},"clientToken":"t"}"#,
        )
        .unwrap();
        assert_eq!(kb.knowledge_base_configuration.kind, "VECTOR");
        let ds: CreateDataSource = parse_json(
            br#"{"name":"s3","dataSourceConfiguration":{"type":"S3","s3Configuration":
                   {"bucketArn":"arn:aws:s3:::docs","inclusionPrefixes":["guides/"]}},
                 "vectorIngestionConfiguration":{"chunkingConfiguration":{"chunkingStrategy":"FIXED_SIZE",
                   "fixedSizeChunkingConfiguration":{"maxTokens":200,"overlapPercentage":10}}}}"#,
        )
        .unwrap();
        let chunking = ds
            .vector_ingestion_configuration
            .and_then(|v| v.chunking_configuration)
            .unwrap();
        assert_eq!(
            chunking
                .fixed_size_chunking_configuration
                .unwrap()
                .max_tokens,
            200
        );
        let r: RetrieveRequest = parse_json(
            br#"{"retrievalQuery":{"text":"tea"},"retrievalConfiguration":{"vectorSearchConfiguration":
                   {"numberOfResults":3,"filter":{"equals":{"key":"a","value":1}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            r.retrieval_configuration
                .vector_search_configuration
                .number_of_results,
            Some(3)
        );
    }

    #[test]
    fn results_render_with_botocores_names() {
        let r = RetrieveResponse {
            retrieval_results: vec![RetrievalResult {
                content: RetrievalContent {
                    kind: "TEXT",
                    text: "x".into(),
                },
                location: RetrievalLocation::of("s3://b/k.txt", true),
                score: 0.5,
                metadata: Map::new(),
            }],
            next_token: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"retrievalResults": [{"content": {"type": "TEXT", "text": "x"},
                "location": {"type": "S3", "s3Location": {"uri": "s3://b/k.txt"}},
                "score": 0.5, "metadata": {}}]})
        );
    }
}
