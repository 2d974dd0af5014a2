#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! Constrained decoding with the real SmolLM2 weights: a 135M model's tool calls and JSON
//! answers parse and validate, whatever it would have said unconstrained, at any
//! temperature.

mod common;

use std::sync::OnceLock;

use basalt_engine::{EngineConfig, LoadedModel};
use basalt_types::{
    ChatMessage, FinishReason, GenerateEvent, GenerateRequest, OutputConstraints, OutputFormat,
    Prompt, Role, SamplingParams, ToolChoice, ToolSpec,
};
use serde_json::Value;

fn smollm() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        LoadedModel::load(
            &common::model_path("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
            EngineConfig::default(),
        )
        .unwrap()
    })
}

struct Outcome {
    text: String,
    calls: Vec<(String, String, String)>,
    reason: FinishReason,
}

fn run(question: &str, constraints: OutputConstraints, temperature: f32, seed: u64) -> Outcome {
    let request = GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage::text(Role::User, question)]),
        sampling: SamplingParams {
            temperature,
            seed: Some(seed),
            ..Default::default()
        },
        max_tokens: Some(200),
        stop: vec![],
        logprobs: None,
        constraints,
        cache_points: Vec::new(),
        thinking: None,
    };
    let mut rx = smollm().submit(request).unwrap();
    let mut out = Outcome {
        text: String::new(),
        calls: Vec::new(),
        reason: FinishReason::MaxTokens,
    };
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenerateEvent::Text { text, .. } => out.text.push_str(&text),
            GenerateEvent::ToolCallStart { index, id, name } => {
                assert_eq!(index as usize, out.calls.len());
                out.calls.push((id, name, String::new()));
            }
            GenerateEvent::ToolArguments { index, json } => {
                out.calls[index as usize].2.push_str(&json)
            }
            GenerateEvent::Finished { reason, .. } => {
                out.reason = reason;
                break;
            }
            GenerateEvent::Failed { error, .. } => panic!("{error}"),
            GenerateEvent::Reasoning { .. } => panic!("SmolLM2 does not think"),
        }
    }
    out
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "get_weather".into(),
            description: Some("Get the current weather in a city".into()),
            parameters: r#"{"type":"object","properties":{"city":{"type":"string","maxLength":40},
                "unit":{"type":"string","enum":["celsius","fahrenheit"]}},
                "required":["city","unit"],"additionalProperties":false}"#
                .into(),
        },
        ToolSpec {
            name: "add".into(),
            description: Some("Add two integers".into()),
            parameters:
                r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},
                "required":["a","b"],"additionalProperties":false}"#
                    .into(),
        },
    ]
}

#[test]
fn required_tool_calls_always_parse_and_validate() {
    for (seed, temperature) in [(1, 0.0), (2, 0.8), (3, 1.0), (4, 1.0)] {
        let out = run(
            "What's the weather like in Paris today?",
            OutputConstraints {
                tools: tools(),
                tool_choice: ToolChoice::Required,
                format: OutputFormat::Text,
            },
            temperature,
            seed,
        );
        assert_eq!(
            out.reason,
            FinishReason::ToolUse,
            "seed {seed}: {}",
            out.text
        );
        assert!(out.text.is_empty(), "{}", out.text);
        assert_eq!(out.calls.len(), 1);
        let (id, name, args) = &out.calls[0];
        assert!(id.starts_with("call_"));
        let args: Value = serde_json::from_str(args).unwrap();
        match name.as_str() {
            "get_weather" => {
                assert!(args["city"]
                    .as_str()
                    .is_some_and(|c| c.chars().count() <= 40));
                assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
                assert_eq!(args.as_object().unwrap().len(), 2);
            }
            "add" => assert!(args["a"].is_number() && args["b"].is_number()),
            other => panic!("unknown tool {other}"),
        }
    }
}

#[test]
fn a_named_tool_is_the_one_called() {
    let out = run(
        "What is 2 plus 3?",
        OutputConstraints {
            tools: tools(),
            tool_choice: ToolChoice::Named("add".into()),
            format: OutputFormat::Text,
        },
        0.0,
        1,
    );
    assert_eq!(out.calls[0].1, "add");
    let args: Value = serde_json::from_str(&out.calls[0].2).unwrap();
    assert!(args["a"].is_i64() && args["b"].is_i64(), "{args}");
}

#[test]
fn auto_choice_may_answer_in_text() {
    let out = run(
        "Say hello.",
        OutputConstraints {
            tools: tools(),
            tool_choice: ToolChoice::Auto,
            format: OutputFormat::Text,
        },
        0.0,
        1,
    );
    // Whichever the model picks, the result is well-formed: a valid call or plain text.
    if out.calls.is_empty() {
        assert!(!out.text.starts_with('<'));
        assert_ne!(out.reason, FinishReason::ToolUse);
    } else {
        serde_json::from_str::<Value>(&out.calls[0].2).unwrap();
    }
}

#[test]
fn json_schema_answers_parse_and_validate() {
    let schema = r#"{"type":"object","properties":{
        "name":{"type":"string","maxLength":30},
        "age":{"type":"integer","minimum":0,"maximum":150},
        "languages":{"type":"array","items":{"type":"string","maxLength":20},"maxItems":3}},
        "required":["name","age","languages"],"additionalProperties":false}"#;
    for (seed, temperature) in [(1, 0.0), (7, 1.0)] {
        let out = run(
            "Describe a fictional programmer.",
            OutputConstraints {
                format: OutputFormat::JsonSchema {
                    name: Some("person".into()),
                    schema: schema.into(),
                },
                ..Default::default()
            },
            temperature,
            seed,
        );
        assert_eq!(out.reason, FinishReason::EndOfTurn, "{}", out.text);
        let v: Value = serde_json::from_str(&out.text).unwrap();
        assert!(v["name"].is_string(), "{v}");
        let age = v["age"].as_f64().unwrap();
        assert!((0.0..=150.0).contains(&age) && age.fract() == 0.0, "{v}");
        assert!(v["languages"].as_array().unwrap().len() <= 3, "{v}");
    }
}

#[test]
fn bad_schemas_and_tools_are_request_errors() {
    let bad = |constraints: OutputConstraints| {
        smollm()
            .prepare(GenerateRequest {
                prompt: Prompt::Chat(vec![ChatMessage::text(Role::User, "hi")]),
                sampling: SamplingParams::default(),
                max_tokens: Some(5),
                stop: vec![],
                logprobs: None,
                constraints,
                cache_points: Vec::new(),
                thinking: None,
            })
            .unwrap_err()
    };
    let e = bad(OutputConstraints {
        format: OutputFormat::JsonSchema {
            name: None,
            schema: r#"{"type":"object","properties":{"a":{"type":"bogus"}}}"#.into(),
        },
        ..Default::default()
    });
    assert_eq!(e.status(), 400);
    assert_eq!(e.param.as_deref(), Some("response_format"));
    let mut t = tools();
    t[1].parameters = "not json".into();
    let e = bad(OutputConstraints {
        tools: t,
        tool_choice: ToolChoice::Required,
        format: OutputFormat::Text,
    });
    assert_eq!(e.param.as_deref(), Some("tools.1.parameters"));
}

/// Prefix caching with the real weights: the same conversation twice gives the same greedy
/// answer, the second time from cached keys and values: every whole 16-token block of the
/// prompt except one that would hold its last token.
#[test]
fn a_repeated_prompt_is_served_from_the_prefix_cache_unchanged() {
    let ask = || {
        let request = GenerateRequest {
            prompt: Prompt::Chat(vec![
                ChatMessage::text(
                    Role::System,
                    "You are a helpful assistant who answers in one sentence.",
                ),
                ChatMessage::text(
                    Role::User,
                    "What is the capital of France, and why is it famous?",
                ),
            ]),
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            max_tokens: Some(24),
            stop: vec![],
            logprobs: None,
            constraints: OutputConstraints::default(),
            cache_points: Vec::new(),
            thinking: None,
        };
        let mut rx = smollm().submit(request).unwrap();
        let mut text = String::new();
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                GenerateEvent::Text { text: t, .. } => text.push_str(&t),
                GenerateEvent::Finished { usage, .. } => return (text, usage),
                other => panic!("{other:?}"),
            }
        }
        panic!("no end");
    };
    let (first, u1) = ask();
    let (second, u2) = ask();
    assert_eq!(first, second);
    assert_eq!(
        u2.cached_input_tokens,
        (u2.input_tokens - 1) / 16 * 16,
        "{u2:?}"
    );
    assert!(u2.cached_input_tokens > u1.cached_input_tokens);
}

/// A tool whose schema does not say `additionalProperties` gets exactly the keys it names:
/// unconstrained by that, SmolLM2 copied words of the schema itself into the arguments
/// (`"required": "city"`, `"type": "string"`) in 4 of 12 forced calls, which fails the call
/// (`unexpected keyword argument`).
#[test]
fn tool_arguments_hold_only_the_keys_the_schema_names() {
    let open_schema = vec![ToolSpec {
        name: "get_weather".into(),
        description: Some("Get the current weather in a city".into()),
        parameters: r#"{"type":"object","properties":{"city":{"type":"string"},
            "unit":{"type":"string","enum":["C","F"]}},"required":["city"]}"#
            .into(),
    }];
    let cities = ["Tokyo", "Rome", "Paris", "Lima", "Oslo", "Cairo"];
    for (i, city) in cities.iter().enumerate() {
        for temperature in [0.0, 0.8] {
            let out = run(
                &format!("What's the weather in {city}? Use Celsius."),
                OutputConstraints {
                    tools: open_schema.clone(),
                    tool_choice: ToolChoice::Named("get_weather".into()),
                    format: OutputFormat::Text,
                },
                temperature,
                i as u64 + 10,
            );
            assert_eq!(out.calls.len(), 1, "{}", out.text);
            let args: Value = serde_json::from_str(&out.calls[0].2).unwrap();
            let keys: Vec<&String> = args.as_object().unwrap().keys().collect();
            assert!(
                keys.iter().all(|k| *k == "city" || *k == "unit"),
                "{city} at {temperature}: {args}"
            );
            assert!(args["city"].is_string(), "{args}");
        }
    }
}
