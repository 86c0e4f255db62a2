//! Bench (not a test): encode time and file size of one 1024² image in each output format, with
//! our metadata, as the worker saves it.
//!
//! ```text
//! cargo run --release --example bench_formats -- [SIDE] [REPEATS]
//! ```
//!
//! The image is synthetic but photo-like: smooth colour fields plus fine grain, so the codecs
//! have edges and noise to spend bits on (a flat image would flatter every codec).

use std::process::ExitCode;
use std::time::Instant;

use imagelab::storage::metadata::GenerationInfo;
use imagelab::storage::metadata::encode::{OutputFormat, SaveOptions, encode_image};

fn synthetic_image(side: u32) -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9;
    let mut grain = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        f64::from(state % 25) - 12.0
    };
    let mut rgb = Vec::with_capacity(side as usize * side as usize * 3);
    let scale = f64::from(side);
    for y in 0..side {
        for x in 0..side {
            let (u, v) = (f64::from(x) / scale, f64::from(y) / scale);
            let base = [
                128.0 + 90.0 * (6.0 * u + 2.0 * v).sin(),
                128.0 + 80.0 * (4.0 * v - 3.0 * u).cos(),
                128.0 + 70.0 * (9.0 * u * v).sin(),
            ];
            for channel in base {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "clamped to 0..=255 first"
                )]
                let sample = (channel + grain()).clamp(0.0, 255.0) as u8;
                rgb.push(sample);
            }
        }
    }
    rgb
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let side: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let repeats: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let rgb = synthetic_image(side);
    let info = GenerationInfo {
        prompt: "a lighthouse at dusk, cinematic film still, dramatic lighting".into(),
        negative: "blurry, lowres".into(),
        width: side,
        height: side,
        ..GenerationInfo::default()
    };
    let cases = [
        ("png", SaveOptions { format: OutputFormat::Png, ..SaveOptions::default() }),
        ("jpeg q90", SaveOptions { format: OutputFormat::Jpeg, quality: 90, lossless: false }),
        ("webp q90", SaveOptions { format: OutputFormat::Webp, quality: 90, lossless: false }),
        ("webp q80", SaveOptions { format: OutputFormat::Webp, quality: 80, lossless: false }),
        ("webp lossless", SaveOptions { format: OutputFormat::Webp, quality: 90, lossless: true }),
    ];
    println!("{side}x{side}, best of {repeats}");
    println!("| format | encode ms | bytes |");
    println!("|---|---|---|");
    for (name, options) in cases {
        let mut best = f64::INFINITY;
        let mut file_bytes = 0;
        for _ in 0..repeats {
            let started = Instant::now();
            match encode_image(side, side, &rgb, &info, options) {
                Ok(bytes) => file_bytes = bytes.len(),
                Err(err) => {
                    eprintln!("error: {name}: {err}");
                    return ExitCode::FAILURE;
                }
            }
            best = best.min(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!("| {name} | {best:.0} | {file_bytes} |");
    }
    ExitCode::SUCCESS
}
