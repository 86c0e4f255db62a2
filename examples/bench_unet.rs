//! Bench (not a test): seconds per CFG step (one batch-2 UNet call) of a diffusers UNet folder on
//! candle at one or more sizes, the VAE decode of one image, load times and peak RSS, to compare
//! with `tools/reference/bench_unet.py` on the same folders and machine (`scripts/bench-cpu`
//! runs both alternately and prints the table).
//!
//! ```text
//! python tools/reference/bench_unet.py --out /tmp/sdxl_unet --vae /tmp/sdxl_vae --sizes 256,512 --calls 3
//! cargo run --release --example bench_unet -- /tmp/sdxl_unet 256,512 3 cpu f32 /tmp/sdxl_vae
//! ```
//!
//! Prints one JSON line. `kernels` says which instruction set our kernels ran (everything in an
//! f32 step on the CPU: convolutions, linear layers, attention, GroupNorm; the CPU decides,
//! capped by `IMAGELAB_CPU_ISA`); `peak_rss_mib` is the process's high-water mark (`VmHWM`, which counts the
//! mmap'd weight pages it touched); `rss_mib` after each phase shows where it was reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use imagelab::app::config::FrontEndConfig;
use imagelab::diffusion::device::{cpu_threads, device_label, select_device, select_dtype};
use imagelab::diffusion::unet::{PerBlock, UNet2DConditionModel, UNetConditioning};
use imagelab::diffusion::vae::AutoencoderKl;
use imagelab::vocab::{DeviceChoice, Precision};
use serde_json::{Value, json};

const USAGE: &str =
    "usage: bench_unet UNET_FOLDER [SIZES, e.g. 256,512] [CALLS] [DEVICE] [DTYPE] [VAE_FOLDER]";

/// A line of `/proc/self/status` in MiB (`VmHWM`, `VmRSS`); `None` off Linux.
fn status_mib(field: &str) -> Option<f64> {
    let text = fs_err::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|line| line.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Seconds of `calls` batch-2 UNet calls at `size`² pixels (latent `size`/8).
fn time_unet(
    unet: &UNet2DConditionModel,
    size: usize,
    calls: usize,
    device: &Device,
    dtype: DType,
) -> anyhow::Result<Vec<f64>> {
    let config = unet.config();
    let latent = size / 8;
    let cross = match &config.cross_attention_dim {
        PerBlock::One(width) => *width,
        PerBlock::Each(widths) => widths.first().copied().unwrap_or(2048),
    };
    let sample = Tensor::randn(0f32, 1.0, (2, config.in_channels, latent, latent), device)?
        .to_dtype(dtype)?;
    let context = Tensor::randn(0f32, 1.0, (2, 77, cross), device)?.to_dtype(dtype)?;
    let pooled = unet
        .pooled_width()
        .map(|width| Tensor::randn(0f32, 1.0, (2, width), device))
        .transpose()?;
    let side_px = size as f32;
    let ids = [side_px, side_px, 0.0, 0.0, side_px, side_px];
    let time_ids = Tensor::new(&[ids, ids], device)?;
    let mut step_s = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let out = unet.forward(
            &sample,
            500.0,
            UNetConditioning {
                encoder_hidden_states: &context,
                text_embeds: pooled.as_ref(),
                time_ids: unet.needs_text_time().then_some(&time_ids),
            },
        )?;
        device.synchronize()?;
        drop(out);
        step_s.push(started.elapsed().as_secs_f64());
    }
    Ok(step_s)
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let folder = PathBuf::from(args.first().ok_or_else(|| anyhow::anyhow!(USAGE))?);
    let sizes: Vec<usize> = args
        .get(1)
        .map_or("512", String::as_str)
        .split(',')
        .map(|text| text.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow::anyhow!("SIZES: {err} ({USAGE})"))?;
    anyhow::ensure!(
        sizes.iter().all(|size| *size >= 64 && size.is_multiple_of(8)),
        "SIZES must be multiples of 8, at least 64"
    );
    let calls: usize = args.get(2).map_or(Ok(3), |text| text.parse())?;
    anyhow::ensure!(calls > 0, "CALLS must be at least 1");
    let device_choice = args
        .get(3)
        .map_or(Ok(DeviceChoice::Cpu), |text| DeviceChoice::parse(text))
        .map_err(anyhow::Error::msg)?;
    let precision =
        args.get(4).map(|text| Precision::parse(text)).transpose().map_err(anyhow::Error::msg)?;
    let vae_folder = args.get(5).map(PathBuf::from);
    imagelab_kernels::isa::set_cap(FrontEndConfig::from_process_env().cpu_isa()?);
    let device = select_device(device_choice)?;
    let dtype = select_dtype(&device, precision)?;

    let load_started = Instant::now();
    let unet = UNet2DConditionModel::load(&folder, dtype, &device, dtype != DType::F32)?;
    let load_s = load_started.elapsed().as_secs_f64();
    let mut rss_mib = vec![json!({"after": "unet load", "mib": status_mib("VmRSS:")})];
    let mut per_size = Vec::new();
    for &size in &sizes {
        let step_s = time_unet(&unet, size, calls, &device, dtype)?;
        rss_mib.push(json!({"after": format!("unet {size}"), "mib": status_mib("VmRSS:")}));
        per_size.push(json!({"size": size, "step_s": step_s}));
    }
    drop(unet);

    let vae = match vae_folder {
        None => Value::Null,
        Some(vae_folder) => {
            let started = Instant::now();
            let vae = AutoencoderKl::load(&vae_folder, dtype, &device, dtype != DType::F32)?;
            let vae_load_s = started.elapsed().as_secs_f64();
            let channels = vae.config().latent_channels;
            let mut decodes = Vec::new();
            for &size in &sizes {
                let latent = size / 8;
                let latents = Tensor::randn(0f32, 1.0, (1, channels, latent, latent), &device)?
                    .to_dtype(dtype)?;
                let started = Instant::now();
                let image = vae.decode(&latents)?;
                device.synchronize()?;
                drop(image);
                decodes.push(json!({"size": size, "decode_s": started.elapsed().as_secs_f64()}));
            }
            rss_mib.push(json!({"after": "vae", "mib": status_mib("VmRSS:")}));
            json!({"load_s": vae_load_s, "decodes": decodes})
        }
    };
    let summary = json!({
        "impl": "imagelab",
        "kernels": imagelab_kernels::isa::current().name(),
        "threads": cpu_threads(),
        "device": device_label(&device),
        "dtype": format!("{dtype:?}"),
        "batch": 2,
        "load_s": load_s,
        "sizes": per_size,
        "vae": vae,
        "rss_mib": rss_mib,
        "peak_rss_mib": status_mib("VmHWM:"),
    });
    println!("{summary}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench_unet: {err:#}");
            ExitCode::FAILURE
        }
    }
}
