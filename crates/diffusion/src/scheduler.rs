//! Noise schedules and samplers: DDIM (deterministic, `eta = 0`), Euler, and Euler
//! ancestral, configured from diffusers' `scheduler/scheduler_config.json`.
//!
//! Written here rather than taken from candle-transformers because every random draw must
//! come from the request's seed (candle's CPU generator cannot be seeded), and because a
//! sampler is small, pure arithmetic that deserves its own tests. The timestep spacings and
//! update rules follow diffusers' `DDIMScheduler` and `EulerDiscreteScheduler` /
//! `EulerAncestralDiscreteScheduler`.

use candle_core::Tensor;
use serde::Deserialize;

use crate::DiffusionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    Ddim,
    Euler,
    EulerAncestral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The model predicts the added noise.
    Epsilon,
    /// The model predicts `v = sqrt(a) * noise - sqrt(1 - a) * x0`.
    Velocity,
    /// The model predicts the clean sample.
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

/// The training noise schedule and the sampler that walks it back.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub sampler: Sampler,
    pub prediction: Prediction,
    pub spacing: Spacing,
    pub train_steps: usize,
    pub steps_offset: usize,
    /// DDIM's last step: `true` ends at alpha 1 (no noise), `false` at the first training
    /// step's alpha, as diffusers does.
    pub set_alpha_to_one: bool,
    alphas_cumprod: Vec<f64>,
}

#[derive(Deserialize)]
struct Json {
    #[serde(rename = "_class_name", default)]
    class_name: String,
    #[serde(default = "default_beta_start")]
    beta_start: f64,
    #[serde(default = "default_beta_end")]
    beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    beta_schedule: String,
    #[serde(default = "default_train_steps")]
    num_train_timesteps: usize,
    #[serde(default = "default_prediction")]
    prediction_type: String,
    #[serde(default = "default_spacing")]
    timestep_spacing: String,
    #[serde(default)]
    steps_offset: usize,
    #[serde(default)]
    set_alpha_to_one: bool,
}

fn default_beta_start() -> f64 {
    0.00085
}
fn default_beta_end() -> f64 {
    0.012
}
fn default_beta_schedule() -> String {
    "scaled_linear".into()
}
fn default_train_steps() -> usize {
    1000
}
fn default_prediction() -> String {
    "epsilon".into()
}
fn default_spacing() -> String {
    "leading".into()
}

impl SchedulerConfig {
    /// Reads diffusers' scheduler config. Euler schedulers keep their sampler; every other
    /// class (DDIM, PNDM, LMS, DPM-Solver...) shares the same training schedule and is
    /// sampled with DDIM.
    pub fn from_json(text: &str) -> Result<Self, DiffusionError> {
        let bad = |m: String| DiffusionError::Model(format!("scheduler_config.json: {m}"));
        let j: Json = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let sampler = match j.class_name.as_str() {
            "EulerAncestralDiscreteScheduler" => Sampler::EulerAncestral,
            "EulerDiscreteScheduler" => Sampler::Euler,
            _ => Sampler::Ddim,
        };
        let prediction = match j.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::Velocity,
            "sample" => Prediction::Sample,
            other => return Err(bad(format!("prediction_type `{other}` is not supported"))),
        };
        let spacing = match j.timestep_spacing.as_str() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => return Err(bad(format!("timestep_spacing `{other}` is not supported"))),
        };
        let t = j.num_train_timesteps;
        if !(2..=100_000).contains(&t) {
            return Err(bad(format!("num_train_timesteps {t} is out of range")));
        }
        let betas: Vec<f64> = match j.beta_schedule.as_str() {
            "linear" => linspace(j.beta_start, j.beta_end, t),
            "scaled_linear" => linspace(j.beta_start.sqrt(), j.beta_end.sqrt(), t)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            other => return Err(bad(format!("beta_schedule `{other}` is not supported"))),
        };
        if betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(bad("betas must lie in [0, 1)".into()));
        }
        let alphas_cumprod = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        Ok(Self {
            sampler,
            prediction,
            spacing,
            train_steps: t,
            steps_offset: j.steps_offset,
            set_alpha_to_one: j.set_alpha_to_one,
            alphas_cumprod,
        })
    }

    /// The timesteps (descending) of an `n`-step run, as diffusers computes them.
    fn timesteps(&self, n: usize) -> Vec<f64> {
        let t = self.train_steps;
        let last = (t - 1) as f64;
        let raw: Vec<f64> = match self.spacing {
            Spacing::Leading => {
                let ratio = t / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t as f64 / n as f64;
                (0..n)
                    .map(|i| (t as f64 - i as f64 * ratio).round() - 1.0)
                    .collect()
            }
            Spacing::Linspace => linspace(0.0, last, n).into_iter().rev().collect(),
        };
        let integer = self.sampler == Sampler::Ddim;
        raw.into_iter()
            .map(|x| {
                let x = x.clamp(0.0, last);
                if integer {
                    x.round()
                } else {
                    x
                }
            })
            .collect()
    }

    /// Noise level of (fractional) training timestep `t`, interpolated linearly.
    fn sigma_at(&self, t: f64) -> f64 {
        let sigma = |i: usize| {
            let a = self.alphas_cumprod[i];
            ((1.0 - a) / a).sqrt()
        };
        let lo = t.floor().max(0.0) as usize;
        let hi = (lo + 1).min(self.train_steps - 1);
        let frac = t - lo as f64;
        sigma(lo) * (1.0 - frac) + sigma(hi) * frac
    }

    /// The plan of an `n`-step run.
    pub fn plan(&self, n: usize) -> Result<Plan, DiffusionError> {
        if n == 0 || n > self.train_steps {
            return Err(DiffusionError::Input {
                param: "steps",
                message: format!("steps must be between 1 and {}, got {n}", self.train_steps),
            });
        }
        let timesteps = self.timesteps(n);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| self.sigma_at(t)).collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().copied().fold(0.0, f64::max);
        let init_noise_sigma = match (self.sampler, self.spacing) {
            (Sampler::Ddim, _) => 1.0,
            (_, Spacing::Linspace | Spacing::Trailing) => max_sigma,
            (_, Spacing::Leading) => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Plan {
            config: self.clone(),
            timesteps,
            sigmas,
            ddim_stride: self.train_steps / n,
            init_noise_sigma,
        })
    }
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

/// One run's timesteps and noise levels.
pub struct Plan {
    config: SchedulerConfig,
    timesteps: Vec<f64>,
    /// Euler's noise levels, one per timestep plus a final 0.
    sigmas: Vec<f64>,
    ddim_stride: usize,
    init_noise_sigma: f64,
}

impl Plan {
    /// The timesteps to give the UNet, in order.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// What pure noise is multiplied by to start.
    pub fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    /// Whether a step draws fresh noise (see [`Plan::step`]).
    pub fn needs_noise(&self) -> bool {
        self.config.sampler == Sampler::EulerAncestral
    }

    /// The UNet's input at step `i`: Euler samplers work in sigma space and scale the
    /// sample back to unit variance.
    pub fn scale_model_input(&self, sample: &Tensor, i: usize) -> candle_core::Result<Tensor> {
        match self.config.sampler {
            Sampler::Ddim => Ok(sample.clone()),
            Sampler::Euler | Sampler::EulerAncestral => {
                let s = self.sigmas[i];
                sample.affine(1.0 / (s * s + 1.0).sqrt(), 0.0)
            }
        }
    }

    /// The sample after step `i`, from the model's output on it. `noise` is used only by
    /// the ancestral sampler (standard normal, the sample's shape).
    pub fn step(
        &self,
        i: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        match self.config.sampler {
            Sampler::Ddim => self.ddim_step(i, model_output, sample),
            Sampler::Euler | Sampler::EulerAncestral => {
                self.euler_step(i, model_output, sample, noise)
            }
        }
    }

    fn ddim_step(&self, i: usize, out: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let ac = &self.config.alphas_cumprod;
        let t = self.timesteps[i] as usize;
        let a = ac[t];
        let a_prev = match t.checked_sub(self.ddim_stride) {
            Some(p) => ac[p],
            None if self.config.set_alpha_to_one => 1.0,
            None => ac[0],
        };
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        // The clean sample and the noise implied by the model's output.
        let (x0, eps) = match self.config.prediction {
            Prediction::Epsilon => (
                (x - out.affine(sb, 0.0)?)?.affine(1.0 / sa, 0.0)?,
                out.clone(),
            ),
            Prediction::Velocity => (
                (x.affine(sa, 0.0)? - out.affine(sb, 0.0)?)?,
                (out.affine(sa, 0.0)? + x.affine(sb, 0.0)?)?,
            ),
            Prediction::Sample => (
                out.clone(),
                (x - out.affine(sa, 0.0)?)?.affine(1.0 / sb, 0.0)?,
            ),
        };
        x0.affine(a_prev.sqrt(), 0.0)? + eps.affine((1.0 - a_prev).sqrt(), 0.0)?
    }

    fn euler_step(
        &self,
        i: usize,
        out: &Tensor,
        x: &Tensor,
        noise: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = match self.config.prediction {
            Prediction::Epsilon => (x - out.affine(sigma, 0.0)?)?,
            Prediction::Velocity => {
                let s2 = sigma * sigma + 1.0;
                (out.affine(-sigma / s2.sqrt(), 0.0)? + x.affine(1.0 / s2, 0.0)?)?
            }
            Prediction::Sample => out.clone(),
        };
        // The derivative dx/dsigma at this level.
        let d = (x - &x0)?.affine(1.0 / sigma, 0.0)?;
        match (self.config.sampler, noise) {
            (Sampler::EulerAncestral, Some(noise)) if next > 0.0 => {
                let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
                let down = (next * next - up * up).sqrt();
                (x + d.affine(down - sigma, 0.0)?)? + noise.affine(up, 0.0)?
            }
            _ => x + d.affine(next - sigma, 0.0)?,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    fn config(extra: &str) -> SchedulerConfig {
        SchedulerConfig::from_json(&format!(
            r#"{{"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear"{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn timesteps_match_diffusers() {
        // DDIMScheduler(steps_offset=1).set_timesteps(10).timesteps
        let c = config(r#","_class_name":"DDIMScheduler","steps_offset":1"#);
        assert_eq!(
            c.plan(10).unwrap().timesteps(),
            [901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0]
        );
        // SD-Turbo: EulerDiscreteScheduler, trailing; one step starts at 999.
        let turbo =
            config(r#","_class_name":"EulerDiscreteScheduler","timestep_spacing":"trailing""#);
        assert_eq!(turbo.plan(1).unwrap().timesteps(), [999.0]);
        assert_eq!(
            turbo.plan(4).unwrap().timesteps(),
            [999.0, 749.0, 499.0, 249.0]
        );
        let lin =
            config(r#","_class_name":"EulerDiscreteScheduler","timestep_spacing":"linspace""#);
        let t = lin.plan(3).unwrap();
        assert_eq!(t.timesteps(), [999.0, 499.5, 0.0]);
        // Sigma at 999 for SD's schedule is about 14.61 (diffusers prints 14.6146).
        assert!(
            (t.init_noise_sigma() - 14.6146).abs() < 1e-3,
            "{}",
            t.init_noise_sigma()
        );
    }

    fn total_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn samplers_recover_the_clean_sample_from_a_perfect_noise_prediction() {
        // If the model predicts exactly the noise that was added, one DDIM step to the end
        // (alpha 1) returns the clean sample; so does an Euler step to sigma 0.
        let dev = Device::Cpu;
        let x0 = Tensor::new(&[0.5f32, -0.25, 1.0, 0.0], &dev).unwrap();
        let eps = Tensor::new(&[1.0f32, -1.0, 0.3, 2.0], &dev).unwrap();
        let ddim = config(r#","_class_name":"DDIMScheduler","set_alpha_to_one":true"#);
        let plan = ddim.plan(1).unwrap();
        let a = ddim.alphas_cumprod[plan.timesteps()[0] as usize];
        let xt = (x0.affine(a.sqrt(), 0.0).unwrap() + eps.affine((1.0 - a).sqrt(), 0.0).unwrap())
            .unwrap();
        let diff = total_difference(&plan.step(0, &eps, &xt, None).unwrap(), &x0);
        assert!(diff < 1e-4, "{diff}");

        let euler =
            config(r#","_class_name":"EulerDiscreteScheduler","timestep_spacing":"trailing""#);
        let plan = euler.plan(1).unwrap();
        let sigma = plan.sigmas[0];
        let xt = (&x0 + eps.affine(sigma, 0.0).unwrap()).unwrap();
        let diff = total_difference(&plan.step(0, &eps, &xt, None).unwrap(), &x0);
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(SchedulerConfig::from_json("{").is_err());
        assert!(SchedulerConfig::from_json(r#"{"prediction_type":"flow"}"#).is_err());
        assert!(SchedulerConfig::from_json(r#"{"num_train_timesteps":0}"#).is_err());
        assert!(
            SchedulerConfig::from_json(r#"{"beta_end":3.0,"beta_schedule":"linear"}"#).is_err()
        );
        let c = config("");
        assert_eq!(c.sampler, Sampler::Ddim);
        assert!(c.plan(0).is_err());
        assert!(c.plan(1001).is_err());
    }
}
