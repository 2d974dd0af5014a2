//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! Labels are model, surface and status only: bounded sets. Tenants are deliberately not a
//! label (their number is unbounded); per-tenant figures come from the usage API.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Seconds; from a fast first token to a long generation.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const PER_TOKEN_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, b) in buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

type Labels = (String, String); // (model, surface)

#[derive(Default)]
struct Inner {
    /// Every HTTP response, by surface and status code (rejections included).
    responses: BTreeMap<(String, u16), u64>,
    requests: BTreeMap<(String, String, String), u64>,
    input_tokens: BTreeMap<Labels, u64>,
    output_tokens: BTreeMap<Labels, u64>,
    latency: BTreeMap<Labels, Histogram>,
    ttft: BTreeMap<Labels, Histogram>,
    per_token: BTreeMap<Labels, Histogram>,
    /// Guardrail assessments by direction (`input`, `output`) and outcome (`none`,
    /// `intervened`).
    guardrail_assessments: BTreeMap<(&'static str, &'static str), u64>,
    /// Guardrail text units by policy (`word`, `sensitive_information`).
    guardrail_units: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// One finished request, as the metrics see it.
pub struct Observation<'a> {
    pub model: &'a str,
    pub surface: &'a str,
    pub status: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_s: f64,
    pub ttft_s: Option<f64>,
}

/// Gauges read at scrape time.
pub struct ModelGauges {
    pub model: String,
    pub waiting: usize,
    pub running: usize,
    pub kv_bytes: usize,
    pub prefix_cache_bytes: usize,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn count_response(&self, surface: &str, status: u16) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.responses
            .entry((surface.to_string(), status))
            .or_default() += 1;
    }

    pub fn observe(&self, o: &Observation<'_>) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let labels = (o.model.to_string(), o.surface.to_string());
        *m.requests
            .entry((labels.0.clone(), labels.1.clone(), o.status.to_string()))
            .or_default() += 1;
        *m.input_tokens.entry(labels.clone()).or_default() += o.input_tokens;
        *m.output_tokens.entry(labels.clone()).or_default() += o.output_tokens;
        m.latency
            .entry(labels.clone())
            .or_default()
            .observe(LATENCY_BUCKETS, o.latency_s);
        if let Some(t) = o.ttft_s {
            m.ttft
                .entry(labels.clone())
                .or_default()
                .observe(LATENCY_BUCKETS, t);
            if o.output_tokens > 1 {
                let per_token = (o.latency_s - t).max(0.0) / (o.output_tokens - 1) as f64;
                m.per_token
                    .entry(labels)
                    .or_default()
                    .observe(PER_TOKEN_BUCKETS, per_token);
            }
        }
    }

    /// One guardrail assessment of a text in one direction.
    pub fn observe_guardrail(
        &self,
        source: &'static str,
        intervened: bool,
        units: basalt_store::GuardrailUnits,
    ) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = if intervened { "intervened" } else { "none" };
        *m.guardrail_assessments
            .entry((source, outcome))
            .or_default() += 1;
        *m.guardrail_units.entry("word").or_default() += units.word;
        *m.guardrail_units
            .entry("sensitive_information")
            .or_default() += units.sensitive_information;
        *m.guardrail_units.entry("contextual_grounding").or_default() += units.contextual_grounding;
        *m.guardrail_units.entry("topic").or_default() += units.topic;
        *m.guardrail_units.entry("content").or_default() += units.content;
    }

    pub fn render(&self, gauges: &[ModelGauges]) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP basalt_http_responses_total HTTP responses by surface and status code.\n\
             # TYPE basalt_http_responses_total counter"
        );
        for ((surface, code), v) in &m.responses {
            let _ = writeln!(
                out,
                "basalt_http_responses_total{{surface=\"{}\",code=\"{code}\"}} {v}",
                escape(surface)
            );
        }
        let _ = writeln!(
            out,
            "# HELP basalt_requests_total Requests finished, by outcome."
        );
        let _ = writeln!(out, "# TYPE basalt_requests_total counter");
        for ((model, surface, status), v) in &m.requests {
            let _ = writeln!(
                out,
                "basalt_requests_total{{model=\"{}\",surface=\"{}\",status=\"{}\"}} {v}",
                escape(model),
                escape(surface),
                escape(status)
            );
        }
        for (name, help, map) in [
            (
                "basalt_input_tokens_total",
                "Prompt tokens processed.",
                &m.input_tokens,
            ),
            (
                "basalt_output_tokens_total",
                "Tokens generated.",
                &m.output_tokens,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((model, surface), v) in map {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",surface=\"{}\"}} {v}",
                    escape(model),
                    escape(surface)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP basalt_guardrail_assessments_total Guardrail assessments by direction and outcome.\n\
             # TYPE basalt_guardrail_assessments_total counter"
        );
        for ((source, outcome), v) in &m.guardrail_assessments {
            let _ = writeln!(
                out,
                "basalt_guardrail_assessments_total{{source=\"{source}\",outcome=\"{outcome}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP basalt_guardrail_text_units_total Guardrail text units (1,000 characters) by policy.\n\
             # TYPE basalt_guardrail_text_units_total counter"
        );
        for (policy, v) in &m.guardrail_units {
            let _ = writeln!(
                out,
                "basalt_guardrail_text_units_total{{policy=\"{policy}\"}} {v}"
            );
        }
        for (name, help, map, buckets) in [
            (
                "basalt_request_duration_seconds",
                "Time from request to last token.",
                &m.latency,
                LATENCY_BUCKETS,
            ),
            (
                "basalt_time_to_first_token_seconds",
                "Time from request to first generated token.",
                &m.ttft,
                LATENCY_BUCKETS,
            ),
            (
                "basalt_time_per_output_token_seconds",
                "Mean time between generated tokens after the first.",
                &m.per_token,
                PER_TOKEN_BUCKETS,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for ((model, surface), h) in map {
                let labels = format!(
                    "model=\"{}\",surface=\"{}\"",
                    escape(model),
                    escape(surface)
                );
                for (i, b) in buckets.iter().enumerate() {
                    let c = h.counts.get(i).copied().unwrap_or(0);
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        }
        for (name, help, get) in [
            (
                "basalt_queue_depth",
                "Requests waiting for admission.",
                (|g: &ModelGauges| g.waiting) as fn(&ModelGauges) -> usize,
            ),
            (
                "basalt_running_sequences",
                "Sequences being generated.",
                |g| g.running,
            ),
            ("basalt_kv_cache_bytes", "KV-cache memory in use.", |g| {
                g.kv_bytes
            }),
            (
                "basalt_prefix_cache_bytes",
                "KV-cache memory kept for prompt prefixes (reclaimable).",
                |g| g.prefix_cache_bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for g in gauges {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(&g.model), get(g));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.observe(&Observation {
            model: "m",
            surface: "openai",
            status: "ok",
            input_tokens: 10,
            output_tokens: 5,
            latency_s: 0.3,
            ttft_s: Some(0.1),
        });
        m.count_response("bedrock", 403);
        let text = m.render(&[ModelGauges {
            model: "m".into(),
            waiting: 2,
            running: 1,
            kv_bytes: 4096,
            prefix_cache_bytes: 0,
        }]);
        assert!(text.contains(r#"basalt_requests_total{model="m",surface="openai",status="ok"} 1"#));
        assert!(text.contains(r#"basalt_output_tokens_total{model="m",surface="openai"} 5"#));
        assert!(text.contains(
            r#"basalt_request_duration_seconds_bucket{model="m",surface="openai",le="0.5"} 1"#
        ));
        assert!(text.contains(
            r#"basalt_request_duration_seconds_bucket{model="m",surface="openai",le="0.25"} 0"#
        ));
        assert!(text.contains(
            r#"basalt_time_per_output_token_seconds_count{model="m",surface="openai"} 1"#
        ));
        assert!(text.contains(r#"basalt_queue_depth{model="m"} 2"#));
        assert!(text.contains(r#"basalt_http_responses_total{surface="bedrock",code="403"} 1"#));
        assert!(text.contains(r#"basalt_kv_cache_bytes{model="m"} 4096"#));
    }
}
