//! `screenpilot calibrate`: the calibration self-test on every monitor (or one). For each, five
//! targets at known screen positions are expressed as the 0..1000 coordinates the model would
//! give, mapped back through the agent's own pipeline, the pointer is moved there (only moved:
//! no click, no key) and read back; the error is reported in pixels. Exit code 0 when every
//! target is within `--tolerance` pixels, 3 when one is not (a mapping or scaling problem: the
//! agent would click beside its targets on that monitor).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use screenpilot_agent::calibrate::{calibrate, native_captures};
use screenpilot_agent::enigo_backend::EnigoActuator;
use screenpilot_agent::xcap_backend::XcapCapture;
use screenpilot_agent::StopFlag;

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Only this monitor (its position in the system's list).
    #[arg(long)]
    pub monitor: Option<usize>,
    /// Largest error, in pixels, that still passes.
    #[arg(long, default_value_t = 1.0)]
    pub tolerance: f64,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let monitors = XcapCapture::monitors().context("cannot list the monitors")?;
    let chosen: Vec<_> = match a.monitor {
        Some(i) => vec![monitors.get(i).cloned().with_context(|| format!("no monitor {i}: there are {}", monitors.len()))?],
        None => monitors,
    };
    let geometries = native_captures(chosen)?;
    let mut actuator = EnigoActuator::new()?;
    let mut reader = EnigoActuator::new()?;
    let reports = calibrate(&mut actuator, &mut reader, &geometries, &StopFlag::new())?;
    if a.json {
        crate::out_line(&serde_json::to_string_pretty(&reports)?)?;
    } else {
        for r in &reports {
            crate::out_line(&format!(
                "{}: max error {:.1} px, mean {:.1} px over {} targets",
                r.monitor,
                r.max_error_px,
                r.mean_error_px,
                r.samples.len()
            ))?;
            for s in r.samples.iter().filter(|s| s.error_px > a.tolerance) {
                crate::out_line(&format!(
                    "  target ({}, {}) -> pointer at ({}, {}): {:.1} px off",
                    s.target.x, s.target.y, s.observed.x, s.observed.y, s.error_px
                ))?;
            }
        }
    }
    let bad: Vec<&str> = reports.iter().filter(|r| r.max_error_px > a.tolerance).map(|r| r.monitor.as_str()).collect();
    if bad.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("screenpilot: calibration failed on {} (more than {} px off)", bad.join(", "), a.tolerance);
    Ok(ExitCode::from(3))
}
