//! The real screen capture: [`XcapCapture`] grabs a monitor (or a region of it) with
//! xcap and describes its geometry. X11/Windows input is in global physical pixels,
//! macOS input in logical points; xcap reports monitor positions in those same units.
//! On Xvfb no monitor is "primary", so the first monitor is the fallback.

use std::sync::Arc;

use image::{DynamicImage, RgbImage};

use crate::capture::{Capture, Screenshot};
use crate::coords::{CaptureGeometry, InputSpace, MonitorGeometry, OsPoint, PhysicalRegion};
use crate::error::{AgentError, Result};

/// Which monitor to capture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MonitorChoice {
    /// The primary monitor, or the first one if none is marked primary.
    #[default]
    Primary,
    /// By position in xcap's list.
    Index(usize),
    /// By xcap's monitor name.
    Name(String),
}

/// Screen capture through xcap.
#[derive(Debug, Clone, Default)]
pub struct XcapCapture {
    /// The monitor captured.
    pub monitor: MonitorChoice,
    /// Capture only this part of it (monitor-local physical pixels).
    pub region: Option<PhysicalRegion>,
}

fn err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Capture(e.to_string())
}

const INPUT_SPACE: InputSpace = if cfg!(target_os = "macos") { InputSpace::Logical } else { InputSpace::Physical };

/// Geometry of one xcap monitor.
fn geometry_of(m: &xcap::Monitor) -> Result<MonitorGeometry> {
    let scale = f64::from(m.scale_factor().map_err(err)?);
    let (w, h) = (m.width().map_err(err)?, m.height().map_err(err)?);
    let (width, height) = match INPUT_SPACE {
        InputSpace::Physical => (w, h),
        InputSpace::Logical => ((f64::from(w) * scale).round() as u32, (f64::from(h) * scale).round() as u32),
    };
    Ok(MonitorGeometry {
        name: m.name().map_err(err)?,
        origin: OsPoint { x: m.x().map_err(err)?, y: m.y().map_err(err)? },
        width,
        height,
        scale_factor: scale,
        input_space: INPUT_SPACE,
    })
}

impl XcapCapture {
    /// Geometry of every monitor.
    pub fn monitors() -> Result<Vec<MonitorGeometry>> {
        xcap::Monitor::all().map_err(err)?.iter().map(geometry_of).collect()
    }

    fn pick(&self) -> Result<xcap::Monitor> {
        let all = xcap::Monitor::all().map_err(err)?;
        let found = match &self.monitor {
            MonitorChoice::Primary => {
                let primary = all.iter().position(|m| m.is_primary().unwrap_or(false));
                all.into_iter().nth(primary.unwrap_or(0))
            }
            MonitorChoice::Index(i) => all.into_iter().nth(*i),
            MonitorChoice::Name(n) => all.into_iter().find(|m| m.name().ok().as_ref() == Some(n)),
        };
        found.ok_or_else(|| AgentError::Capture(format!("no monitor matches {:?}", self.monitor)))
    }
}

impl Capture for XcapCapture {
    fn capture(&mut self) -> Result<Screenshot> {
        let m = self.pick()?;
        let mut monitor = geometry_of(&m)?;
        let full: RgbImage = DynamicImage::ImageRgba8(m.capture_image().map_err(err)?).to_rgb8();
        // The image is in physical pixels; trust its size over the reported one.
        monitor.width = full.width();
        monitor.height = full.height();
        let Some(region) = self.region else {
            let geometry = CaptureGeometry::full_monitor(monitor, full.width(), full.height())?;
            return Ok(Screenshot { image: Arc::new(full), geometry });
        };
        let geometry = CaptureGeometry::region(monitor, region, region.width, region.height)?;
        let crop = image::imageops::crop_imm(&full, region.x, region.y, region.width, region.height).to_image();
        Ok(Screenshot { image: Arc::new(crop), geometry })
    }
}
