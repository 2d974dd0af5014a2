//! Which instruction-set level the SIMD kernels run at, chosen at run time.
//!
//! The block products exist at three levels: portable Rust (any CPU), AVX2 with FMA and
//! F16C (x86-64 since 2013), and the same with AVX-512 VNNI's one-instruction byte dot
//! product. The level is detected once, on first use, from the running CPU, so one binary
//! runs the best kernels each machine has. `BASALT_KERNELS` (`portable`, `avx2`,
//! `avx512vnni`) lowers it, to compare levels or to rule a kernel out when chasing a bug.
//!
//! An [`Isa`] value is proof that the CPU runs its level: only [`Isa::detected`],
//! [`Isa::current`] and [`Isa::available`] make one, and the kernels rely on that to call
//! their `#[target_feature]` functions. This module must never hand out a level the CPU
//! lacks.

use std::sync::atomic::{AtomicU8, Ordering};

/// A kernel level the running CPU supports (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Isa(Level);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Portable = 1,
    Avx2 = 2,
    Avx512Vnni = 3,
}

const LEVELS: [Level; 3] = [Level::Portable, Level::Avx2, Level::Avx512Vnni];

/// The level in use, as `Level as u8`; 0 until the first kernel call detects it.
static CURRENT: AtomicU8 = AtomicU8::new(0);

/// The environment variable that lowers the kernel level.
pub const KERNELS_ENV: &str = "BASALT_KERNELS";

impl Isa {
    pub(crate) const PORTABLE: Isa = Isa(Level::Portable);

    /// The level every kernel call uses: the best the CPU supports, lowered by
    /// `BASALT_KERNELS` where that names a lower one (an unknown name is ignored here;
    /// [`configure_from_env`] reports it).
    #[inline]
    pub fn current() -> Isa {
        match CURRENT.load(Ordering::Relaxed) {
            2 => Isa(Level::Avx2),
            3 => Isa(Level::Avx512Vnni),
            1 => Isa(Level::Portable),
            _ => {
                let isa = requested()
                    .ok()
                    .flatten()
                    .map_or(Isa::detected(), |wanted| wanted.min(Isa::detected()));
                CURRENT.store(isa.0 as u8, Ordering::Relaxed);
                isa
            }
        }
    }

    /// The best level the running CPU supports.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512vl");
            if avx2 && avx512 && has!("avx512vnni") {
                return Isa(Level::Avx512Vnni);
            }
            if avx2 {
                return Isa(Level::Avx2);
            }
        }
        Isa::PORTABLE
    }

    /// Every level the running CPU supports, lowest first (the tests run each).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detected();
        LEVELS.into_iter().map(Isa).filter(|&l| l <= best).collect()
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512Vnni => "avx512vnni",
        }
    }

    /// AVX2, FMA and F16C (true at the VNNI level too).
    #[inline]
    pub(crate) fn has_avx2(self) -> bool {
        self.0 >= Level::Avx2
    }

    /// AVX-512 VNNI and VL, besides AVX2.
    #[inline]
    pub(crate) fn has_avx512_vnni(self) -> bool {
        self.0 >= Level::Avx512Vnni
    }
}

/// The level `BASALT_KERNELS` asks for, if set; an error names the accepted values.
fn requested() -> Result<Option<Isa>, String> {
    match std::env::var(KERNELS_ENV) {
        Ok(value) => parse_level(&value),
        Err(_) => Ok(None),
    }
}

/// A `BASALT_KERNELS` value: `None` for `auto` or empty, else the level it names. Any level
/// parses, whatever this CPU supports: callers cap it (see [`configure_from_env`]).
fn parse_level(value: &str) -> Result<Option<Isa>, String> {
    let value = value.trim().to_ascii_lowercase();
    if value.is_empty() || value == "auto" {
        return Ok(None);
    }
    LEVELS
        .into_iter()
        .map(Isa)
        .find(|l| l.name() == value)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{KERNELS_ENV}={value} is not a kernel level (auto, portable, avx2, avx512vnni)"
            )
        })
}

/// Reads `BASALT_KERNELS` once at start-up, so that a mistyped level is an error rather than
/// silently ignored, and returns the level the kernels will use. A level above what the CPU
/// supports is an error too: running it would die of an illegal instruction.
pub fn configure_from_env() -> Result<Isa, String> {
    let detected = Isa::detected();
    if let Some(wanted) = requested()? {
        if wanted > detected {
            return Err(format!(
                "{KERNELS_ENV}={} asks for kernels this CPU cannot run (it supports up to {})",
                wanted.name(),
                detected.name()
            ));
        }
    }
    Ok(Isa::current())
}

/// The instruction-set extensions this build was compiled to use everywhere (`.cargo/
/// config.toml` compiles for the build machine's CPU; the kernels above choose their own
/// level, but the compiler also vectorises the rest of the engine with what the build
/// allows) that the running CPU lacks. A binary copied to an older CPU would otherwise die of
/// an illegal instruction in the middle of a request; the binary checks this first and
/// refuses to start, naming what is missing. A build for a baseline target
/// (`RUSTFLAGS="-C target-cpu=x86-64-v2"`) runs anywhere, with the kernels still at the
/// CPU's best level.
pub fn missing_cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($feature:tt),*) => {$(
                if cfg!(target_feature = $feature)
                    && !std::arch::is_x86_feature_detected!($feature)
                {
                    missing.push($feature);
                }
            )*};
        }
        check!(
            "sse4.1",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "bmi2",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512dq",
            "avx512vnni",
            "avx512bf16",
            "avxvnni"
        );
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_the_current_one_is_available() {
        let available = Isa::available();
        assert_eq!(available[0], Isa::PORTABLE);
        assert!(available.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(available.last(), Some(&Isa::detected()));
        assert!(available.contains(&Isa::current()));
    }

    #[test]
    fn kernel_levels_parse_by_name() {
        for isa in LEVELS.map(Isa) {
            assert_eq!(parse_level(isa.name()), Ok(Some(isa)));
        }
        assert_eq!(parse_level(" AVX2 "), Ok(Some(Isa(Level::Avx2))));
        assert_eq!(parse_level("auto"), Ok(None));
        assert_eq!(parse_level(""), Ok(None));
        let err = parse_level("avx512").unwrap_err();
        assert!(
            err.contains("BASALT_KERNELS=avx512") && err.contains("avx512vnni"),
            "{err}"
        );
    }
}
