//! Bench (not a test): seconds per CFG step (one batch-2 UNet call) of a diffusers UNet folder on
//! candle, to compare with `tools/reference/bench_unet.py` on the same folder and machine.
//!
//! ```text
//! python tools/reference/bench_unet.py --out /tmp/sdxl_unet --size 512 --calls 3   # writes + times diffusers
//! cargo run --release --example bench_unet -- /tmp/sdxl_unet 512 3 [cpu|cuda:0] [f32|f16]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Tensor};
use imagelab::diffusion::device::{select_device, select_dtype};
use imagelab::diffusion::unet::{UNet2DConditionModel, UNetConditioning};
use imagelab::vocab::{DeviceChoice, Precision};

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let folder = PathBuf::from(args.first().ok_or_else(|| {
        anyhow::anyhow!("usage: bench_unet UNET_FOLDER [SIZE] [CALLS] [DEVICE] [DTYPE]")
    })?);
    let size: usize = args.get(1).map_or(Ok(512), |text| text.parse())?;
    let calls: usize = args.get(2).map_or(Ok(3), |text| text.parse())?;
    let device_choice = args
        .get(3)
        .map_or(Ok(DeviceChoice::Cpu), |text| DeviceChoice::parse(text))
        .map_err(anyhow::Error::msg)?;
    let precision =
        args.get(4).map(|text| Precision::parse(text)).transpose().map_err(anyhow::Error::msg)?;
    let device = select_device(device_choice)?;
    let dtype = select_dtype(&device, precision)?;
    let load_started = Instant::now();
    let unet = UNet2DConditionModel::load(&folder, dtype, &device, dtype != DType::F32)?;
    let load_s = load_started.elapsed().as_secs_f64();
    let config = unet.config();
    let latent = size / 8;
    let cross = match &config.cross_attention_dim {
        imagelab::diffusion::unet::PerBlock::One(width) => *width,
        imagelab::diffusion::unet::PerBlock::Each(widths) => {
            widths.first().copied().unwrap_or(2048)
        }
    };
    let sample = Tensor::randn(0f32, 1.0, (2, config.in_channels, latent, latent), &device)?
        .to_dtype(dtype)?;
    let context = Tensor::randn(0f32, 1.0, (2, 77, cross), &device)?.to_dtype(dtype)?;
    let pooled = unet
        .pooled_width()
        .map(|width| Tensor::randn(0f32, 1.0, (2, width), &device))
        .transpose()?;
    let side_px = size as f32;
    let time_ids = Tensor::new(
        &[
            [side_px, side_px, 0.0, 0.0, side_px, side_px],
            [side_px, side_px, 0.0, 0.0, side_px, side_px],
        ],
        &device,
    )?;
    let mut step_s = Vec::new();
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
    let summary = serde_json::json!({
        "impl": "imagelab-candle", "size": size, "batch": 2, "load_s": load_s, "dtype": format!("{dtype:?}"),
        "device": imagelab::diffusion::device::device_label(&device), "step_s": step_s,
    });
    anyhow::ensure!(!step_s.is_empty(), "no calls timed");
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
