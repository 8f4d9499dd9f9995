//! Draws the results page's chart: events per second of Eichhorn and Flink per job, from the
//! `RATIO` lines of `benches/peers/flink/compare.sh`, as an SVG bar chart (log scale).
//!
//! ```text
//! chart --input benches/peers/flink/build/results/summary.txt --output benches/results/events_per_s.svg
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use eichhorn_benches::chart::{log_axis_range, parse_ratio_lines};
use plotters::prelude::*;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Draws events/s per job for Eichhorn and Flink from compare.sh's RATIO lines")]
struct Args {
    /// A file with the RATIO lines (compare.sh's summary.txt or its whole output).
    #[arg(long)]
    input: PathBuf,
    /// The SVG file to write.
    #[arg(long)]
    output: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "Events per second, parallelism 1 (log scale)")]
    title: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chart: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

const EICHHORN: RGBColor = RGBColor(0x8b, 0x45, 0x13);
const FLINK: RGBColor = RGBColor(0x4a, 0x72, 0xb0);

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let jobs = parse_ratio_lines(&text).with_context(|| format!("in {}", args.input.display()))?;
    if jobs.is_empty() {
        bail!(
            "no RATIO lines (other than latency jobs) in {}",
            args.input.display()
        );
    }
    let (low, high) = log_axis_range(&jobs);
    let width = 140 + 70 * jobs.len() as u32;
    let root = SVGBackend::new(&args.output, (width.max(640), 480)).into_drawing_area();
    let draw = |error: DrawingAreaErrorKind<_>| anyhow::anyhow!("cannot draw the chart: {error:?}");
    root.fill(&WHITE).map_err(draw)?;
    let names: Vec<String> = jobs.iter().map(|j| j.job.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(&args.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..jobs.len() as f64, (low..high).log_scale())
        .map_err(draw)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(jobs.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let index = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-9 {
                names.get(index).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("events/s")
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()
        .map_err(draw)?;
    for (engine, color, offset) in [("Eichhorn", EICHHORN, 0.1), ("Flink", FLINK, 0.5)] {
        chart
            .draw_series(jobs.iter().enumerate().map(|(i, job)| {
                let value = if engine == "Eichhorn" {
                    job.eichhorn_eps
                } else {
                    job.flink_eps
                };
                let x = i as f64 + offset;
                Rectangle::new([(x, low), (x + 0.4, value)], color.filled())
            }))
            .map_err(draw)?
            .label(engine)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    println!(
        "chart: wrote {} ({} jobs)",
        args.output.display(),
        jobs.len()
    );
    Ok(())
}
