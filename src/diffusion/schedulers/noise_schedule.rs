//! The noise-schedule arithmetic every diffusers scheduler shares: betas, `alphas_cumprod`,
//! training sigmas, timestep spacings, sigma interpolation and the Karras / exponential sigma
//! schedules.
//!
//! diffusers mixes float32 torch tensors and float64 numpy arrays here; each function says which
//! precision it reproduces, so the schedules agree with diffusers to the last bit or ulp.

use super::config::{BetaSchedule, SchedulerConfig, SchedulerError, TimestepSpacing};

/// Which diffusers class is asking: the classes differ in how they treat zero-terminal-SNR
/// rescaling and a few defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZeroSnr {
    /// The class rescales the betas and pins the last `alphas_cumprod` to 2⁻²⁴ (Euler, Euler a,
    /// DPM++ 2M, UniPC).
    RescaleAndPin,
    /// The class rescales the betas only (DDIM).
    RescaleOnly,
    /// The class has no such option (Heun, LMS, DPM++ SDE): diffusers ignores the key.
    Ignored,
}

/// The class defaults of `beta_start` and `beta_end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BetaDefaults {
    /// `beta_start` when the config has none.
    pub beta_start: f64,
    /// `beta_end` when the config has none.
    pub beta_end: f64,
}

impl BetaDefaults {
    /// 0.0001 → 0.02: most diffusers classes.
    pub const DDPM: Self = Self { beta_start: 0.0001, beta_end: 0.02 };
    /// 0.00085 → 0.012: Heun and DPM++ SDE.
    pub const STABLE_DIFFUSION: Self = Self { beta_start: 0.00085, beta_end: 0.012 };
}

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU: float32 step, the first half
/// counted from `start`, the second half back from `end`.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    #[allow(clippy::cast_possible_truncation, reason = "torch.linspace runs in f32")]
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|index| {
            if index < halfway {
                start + step * index as f32
            } else {
                end - step * (steps - index - 1) as f32
            }
        })
        .collect()
}

/// `numpy.linspace(start, stop, num)` in float64 (`i * step + start`, the last value exactly
/// `stop`).
#[allow(clippy::similar_names, reason = "numpy's own parameter names")]
pub(crate) fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num)
        .map(|index| {
            let index = index as f64;
            index * step + start
        })
        .collect();
    values[num - 1] = stop;
    values
}

/// `numpy.arange(start, stop, step)` for floats: `ceil((stop - start) / step)` values
/// `start + i * delta` with `delta = (start + step) - start`, as numpy fills them.
#[allow(clippy::similar_names, reason = "numpy's own parameter names")]
pub(crate) fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let length = ((stop - start) / step).ceil();
    if length.is_nan() || length <= 0.0 {
        return Vec::new();
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a positive, finite count"
    )]
    let length = length as usize;
    let delta = (start + step) - start;
    (0..length)
        .map(|index| {
            let index = index as f64;
            start + index * delta
        })
        .collect()
}

/// numpy's `round`: half to even.
pub(crate) fn round_half_even(value: f64) -> f64 {
    value.round_ties_even()
}

/// The betas of the training schedule, float32 as diffusers stores them.
///
/// # Errors
/// A `trained_betas` list whose length is not `num_train_timesteps`.
pub(crate) fn betas(
    cfg: &SchedulerConfig,
    defaults: BetaDefaults,
) -> Result<Vec<f32>, SchedulerError> {
    let train_steps = cfg.num_train_timesteps();
    if let Some(trained) = &cfg.trained_betas {
        if trained.len() != train_steps {
            return Err(SchedulerError::Field {
                field: "trained_betas",
                message: format!(
                    "has {} values but num_train_timesteps is {train_steps}",
                    trained.len()
                ),
            });
        }
        #[allow(clippy::cast_possible_truncation, reason = "diffusers keeps betas in f32")]
        return Ok(trained.iter().map(|&beta| beta as f32).collect());
    }
    let beta_start = cfg.beta_start.unwrap_or(defaults.beta_start);
    let beta_end = cfg.beta_end.unwrap_or(defaults.beta_end);
    Ok(match cfg.beta_schedule.unwrap_or(BetaSchedule::Linear) {
        BetaSchedule::Linear => torch_linspace_f32(beta_start, beta_end, train_steps),
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), train_steps)
                .into_iter()
                .map(|root| root * root)
                .collect()
        }
        BetaSchedule::SquaredcosCapV2 => cosine_betas(train_steps),
    })
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform (float64, stored float32).
fn cosine_betas(train_steps: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..train_steps)
        .map(|index| {
            let (t1, t2) =
                (index as f64 / train_steps as f64, (index + 1) as f64 / train_steps as f64);
            #[allow(clippy::cast_possible_truncation, reason = "diffusers keeps betas in f32")]
            let beta = (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32;
            beta
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr`, in float32 like the torch original.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let cumprod = cumprod_f32(&betas.iter().map(|beta| 1.0 - beta).collect::<Vec<_>>());
    let mut roots: Vec<f32> = cumprod.iter().map(|value| value.sqrt()).collect();
    let first = roots[0];
    let last = roots[roots.len() - 1];
    let scale = first / (first - last);
    for root in &mut roots {
        *root -= last;
        *root *= scale;
    }
    let alphas_bar: Vec<f32> = roots.iter().map(|root| root * root).collect();
    let mut alphas = Vec::with_capacity(alphas_bar.len());
    alphas.push(alphas_bar[0]);
    for pair in alphas_bar.windows(2) {
        alphas.push(pair[1] / pair[0]);
    }
    alphas.iter().map(|alpha| 1.0 - alpha).collect()
}

/// `torch.cumprod` of a float32 tensor on the CPU: accumulated in float64, stored float32.
fn cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut product = 1.0f64;
    values
        .iter()
        .map(|&value| {
            product *= f64::from(value);
            #[allow(
                clippy::cast_possible_truncation,
                reason = "diffusers stores alphas_cumprod in f32"
            )]
            let stored = product as f32;
            stored
        })
        .collect()
}

/// `alphas_cumprod` (float32) for the configuration as the asking class builds it.
///
/// # Errors
/// See [`betas`].
pub(crate) fn alphas_cumprod(
    cfg: &SchedulerConfig,
    defaults: BetaDefaults,
    zero_snr: ZeroSnr,
) -> Result<Vec<f32>, SchedulerError> {
    let mut betas = betas(cfg, defaults)?;
    let rescale = cfg.rescale_betas_zero_snr.unwrap_or(false) && zero_snr != ZeroSnr::Ignored;
    if rescale {
        betas = rescale_zero_terminal_snr(&betas);
    }
    let mut cumprod = cumprod_f32(&betas.iter().map(|beta| 1.0 - beta).collect::<Vec<_>>());
    if rescale
        && zero_snr == ZeroSnr::RescaleAndPin
        && let Some(last) = cumprod.last_mut()
    {
        *last = 2f32.powi(-24);
    }
    Ok(cumprod)
}

/// The training sigmas `((1 − ᾱ) / ᾱ)^½`, float32, ascending in the timestep.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&alpha| ((1.0 - alpha) / alpha).sqrt()).collect()
}

/// `np.log` of the float32 training sigmas (numpy keeps float32).
pub(crate) fn log_sigmas(train_sigmas: &[f32]) -> Vec<f32> {
    train_sigmas.iter().map(|sigma| sigma.ln()).collect()
}

/// The float timesteps of the spacing used by Euler, Euler a, Heun, LMS and DPM++ SDE
/// (`num_inference_steps` values, float32 in diffusers).
pub(crate) fn discrete_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    let train = train_steps as f64;
    match spacing {
        TimestepSpacing::Linspace => {
            let mut values: Vec<f64> = numpy_linspace(0.0, train - 1.0, steps)
                .into_iter()
                .map(|value| f64::from(to_f32(value)))
                .collect();
            values.reverse();
            values
        }
        TimestepSpacing::Leading => {
            let ratio = train_steps / steps;
            (0..steps).rev().map(|index| (index * ratio + steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = train / steps as f64;
            numpy_arange(train, 0.0, -ratio)
                .into_iter()
                .map(|value| round_half_even(value) - 1.0)
                .collect()
        }
    }
}

/// The integer timesteps of the spacing used by DPM++ 2M and UniPC (`num_inference_steps + 1`
/// points with the last dropped for linspace and leading).
pub(crate) fn multistep_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    last_timestep: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut values: Vec<f64> = numpy_linspace(0.0, last_timestep as f64 - 1.0, steps + 1)
                .into_iter()
                .map(round_half_even)
                .collect();
            values.reverse();
            values.truncate(steps);
            values
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            let mut values: Vec<f64> =
                (0..=steps).rev().map(|index| (index * ratio + steps_offset) as f64).collect();
            values.truncate(steps);
            values
        }
        TimestepSpacing::Trailing => {
            let ratio = train_steps as f64 / steps as f64;
            numpy_arange(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|value| round_half_even(value) - 1.0)
                .collect()
        }
    }
}

/// The integer timesteps DDIM uses (its linspace spacing rounds, unlike Euler's).
pub(crate) fn ddim_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut values: Vec<f64> = numpy_linspace(0.0, train_steps as f64 - 1.0, steps)
                .into_iter()
                .map(round_half_even)
                .collect();
            values.reverse();
            values
        }
        other => discrete_timesteps(other, train_steps, steps, steps_offset),
    }
}

/// `np.interp(timesteps, arange(len(sigmas)), sigmas)` in float64.
pub(crate) fn interp_sigmas(timesteps: &[f64], train_sigmas: &[f32]) -> Vec<f64> {
    let last = train_sigmas.len() - 1;
    timesteps
        .iter()
        .map(|&t| {
            if t <= 0.0 {
                return f64::from(train_sigmas[0]);
            }
            if t >= last as f64 {
                return f64::from(train_sigmas[last]);
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "t is a non-negative, finite index"
            )]
            let low = t.floor() as usize;
            let weight = t - low as f64;
            let (a, b) = (f64::from(train_sigmas[low]), f64::from(train_sigmas[low + 1]));
            if weight == 0.0 { a } else { a + (b - a) * weight }
        })
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional timestep whose log-sigma matches, interpolating
/// the float32 `log_sigmas` as numpy does (the difference of two float32 values stays float32).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let count = log_sigmas.iter().filter(|&&value| log_sigma - f64::from(value) >= 0.0).count();
    // numpy: argmax of the cumulative count of `dists >= 0` is the last index where it holds
    // (log_sigmas ascend), 0 when it holds nowhere; clipped to len − 2.
    let low_index = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_index], log_sigmas[low_index + 1]);
    let weight = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);

    (1.0 - weight) * low_index as f64 + weight * (low_index + 1) as f64
}

/// Karras et al. (2022) sigmas, ρ = 7, between `sigma_max` and `sigma_min` (float64).
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv_rho, max_inv_rho) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    numpy_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// Sigmas evenly spaced in log space between `sigma_max` and `sigma_min` (float64).
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    numpy_linspace(sigma_max.ln(), sigma_min.ln(), steps).into_iter().map(f64::exp).collect()
}

/// The sigma spacing a scheduler converts its interpolated sigmas to (`use_karras_sigmas`,
/// `use_exponential_sigmas`), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigmaConversion {
    /// Keep the sigmas read off the training schedule.
    None,
    /// Karras et al.'s ρ = 7 spacing.
    Karras,
    /// Even spacing in log-sigma.
    Exponential,
}

impl SigmaConversion {
    /// The conversion the configuration asks for.
    ///
    /// # Errors
    /// More than one conversion switched on, or `use_beta_sigmas` (unsupported).
    pub(crate) fn from_config(cfg: &SchedulerConfig) -> Result<Self, SchedulerError> {
        if cfg.use_beta_sigmas.unwrap_or(false) {
            return Err(SchedulerError::Unsupported {
                field: "use_beta_sigmas",
                value: "true".into(),
            });
        }
        match (cfg.use_karras_sigmas.unwrap_or(false), cfg.use_exponential_sigmas.unwrap_or(false))
        {
            (true, true) => Err(SchedulerError::Field {
                field: "use_karras_sigmas",
                message: "cannot be combined with use_exponential_sigmas".into(),
            }),
            (true, false) => Ok(Self::Karras),
            (false, true) => Ok(Self::Exponential),
            (false, false) => Ok(Self::None),
        }
    }

    /// Converts descending sigmas to this spacing over `steps` values, between
    /// `bounds` (config `sigma_min`/`sigma_max`, for the classes that have them) or the ends of
    /// `in_sigmas`. `None` returns `in_sigmas` unchanged.
    pub(crate) fn convert(
        self,
        in_sigmas: &[f64],
        bounds: (Option<f64>, Option<f64>),
        steps: usize,
    ) -> Vec<f64> {
        let sigma_min = bounds.0.unwrap_or_else(|| in_sigmas.last().copied().unwrap_or(0.0));
        let sigma_max = bounds.1.unwrap_or_else(|| in_sigmas.first().copied().unwrap_or(0.0));
        match self {
            Self::None => in_sigmas.to_vec(),
            Self::Karras => karras_sigmas(sigma_min, sigma_max, steps),
            Self::Exponential => exponential_sigmas(sigma_min, sigma_max, steps),
        }
    }
}

/// `init_noise_sigma` of the sigma-parameterised samplers: the largest sigma for linspace and
/// trailing spacing, `(σ_max² + 1)^½` for leading (float32 arithmetic).
pub(crate) fn karras_init_noise_sigma(spacing: TimestepSpacing, sigmas: &[f32]) -> f64 {
    let max = sigmas.iter().copied().fold(0.0f32, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
    }
}

/// Rounds a float64 to float32, as `.astype(np.float32)` does.
#[allow(clippy::cast_possible_truncation, reason = "the f64 to f32 step diffusers takes")]
pub(crate) fn to_f32(value: f64) -> f32 {
    value as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_rounds_half_to_even_like_numpy() {
        // 1000 / 16 = 62.5: 937.5 rounds to 938 but 812.5 to 812 (numpy's banker's rounding).
        let timesteps = discrete_timesteps(TimestepSpacing::Trailing, 1000, 16, 0);
        assert_eq!(timesteps[..4], [999.0, 937.0, 874.0, 811.0]);
    }

    #[test]
    fn sigma_to_t_inverts_the_training_sigmas() {
        let sigmas: Vec<f32> = (1..=10).map(|value| value as f32).collect();
        let logs = log_sigmas(&sigmas);
        assert!((sigma_to_t(4.0, &logs) - 3.0).abs() < 1e-6);
        assert!((sigma_to_t(0.5, &logs) - 0.0).abs() < 1e-12);
        assert!((sigma_to_t(20.0, &logs) - 9.0).abs() < 1e-12);
    }
}
