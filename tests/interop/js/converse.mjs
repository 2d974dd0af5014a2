// Converse and ConverseStream through the AWS SDK for JavaScript v3, as a user of Bedrock
// would call them with only the endpoint changed. Its Bedrock Runtime client speaks HTTP/2
// only (NodeHttp2Handler): cleartext with prior knowledge for an http:// endpoint, ALPN
// over TLS for https:// (NODE_EXTRA_CA_CERTS names the server's certificate).
//
// Usage: node converse.mjs ENDPOINT MODEL_ID, with AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY set (requests are SigV4-signed). Prints one JSON line.
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";

const [endpoint, modelId] = process.argv.slice(2);
const client = new BedrockRuntimeClient({ endpoint, region: "us-east-1", maxAttempts: 1 });
const request = {
  modelId,
  messages: [{ role: "user", content: [{ text: "What is the capital of France?" }] }],
  system: [{ text: "You are a helpful assistant." }],
  inferenceConfig: { maxTokens: 24, temperature: 0 },
};

const answer = await client.send(new ConverseCommand(request));
const streamed = await client.send(new ConverseStreamCommand(request));
let text = "";
let usage = null;
for await (const event of streamed.stream) {
  text += event.contentBlockDelta?.delta?.text ?? "";
  usage = event.metadata?.usage ?? usage;
}
let missing = null;
try {
  await client.send(new ConverseCommand({ ...request, modelId: "no.such-model-v1:0" }));
} catch (e) {
  missing = e.name;
}
console.log(JSON.stringify({
  converse: answer.output.message.content[0].text,
  stopReason: answer.stopReason,
  stream: text,
  streamUsage: usage,
  missing,
}));
client.destroy();
