//! Calibration self-test: for each monitor, targets are placed at known OS positions,
//! each target's position is expressed as the relative coordinate the model would see,
//! mapped back through the same pipeline the agent uses, the pointer is moved there and
//! read back, and the error in pixels is reported per monitor.

use serde::Serialize;

use crate::actuator::{Actuator, InputEvent, PointerReader, StopFlag};
use crate::coords::{CaptureGeometry, MonitorGeometry, OsPoint};
use crate::error::Result;

/// Target positions as fractions of the monitor (corners inset by 5%, and the centre).
pub const TARGETS: [(f64, f64); 5] = [(0.05, 0.05), (0.95, 0.05), (0.5, 0.5), (0.05, 0.95), (0.95, 0.95)];

/// One target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Where the target is on screen.
    pub target: OsPoint,
    /// Where the mapping sent the pointer.
    pub commanded: OsPoint,
    /// Where the pointer was read back.
    pub observed: OsPoint,
    /// Distance between target and observed position, in OS units.
    pub error_px: f64,
}

/// The result for one monitor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorReport {
    /// Monitor name.
    pub monitor: String,
    /// Every target.
    pub samples: Vec<Sample>,
    /// Largest error.
    pub max_error_px: f64,
    /// Mean error.
    pub mean_error_px: f64,
}

/// Each monitor as a capture at its own size: what `screenpilot calibrate` and the app's
/// Calibrate button check.
pub fn native_captures(monitors: Vec<MonitorGeometry>) -> Result<Vec<CaptureGeometry>> {
    monitors
        .into_iter()
        .map(|m| {
            let (w, h) = (m.width, m.height);
            CaptureGeometry::full_monitor(m, w, h)
        })
        .collect()
}

/// Runs the self-test over the given captures (one per monitor; the image size may
/// differ from the monitor's, as with a downscaled screenshot).
pub fn calibrate(
    actuator: &mut dyn Actuator,
    reader: &mut dyn PointerReader,
    captures: &[CaptureGeometry],
    stop: &StopFlag,
) -> Result<Vec<MonitorReport>> {
    captures.iter().map(|g| calibrate_monitor(actuator, reader, g, stop)).collect()
}

fn calibrate_monitor(
    actuator: &mut dyn Actuator,
    reader: &mut dyn PointerReader,
    g: &CaptureGeometry,
    stop: &StopFlag,
) -> Result<MonitorReport> {
    let (w, h) = g.monitor.os_size();
    let mut samples = Vec::new();
    for (fx, fy) in TARGETS {
        stop.check()?;
        let target = OsPoint {
            x: g.monitor.origin.x + (fx * w).floor() as i32,
            y: g.monitor.origin.y + (fy * h).floor() as i32,
        };
        let commanded = g.rel_to_os(g.os_to_rel(target))?;
        actuator.perform(&InputEvent::MoveTo(commanded))?;
        stop.sleep(std::time::Duration::from_millis(20))?;
        let observed = reader.pointer_position()?;
        let error_px = f64::from(observed.x - target.x).hypot(f64::from(observed.y - target.y));
        samples.push(Sample { target, commanded, observed, error_px });
    }
    let max_error_px = samples.iter().map(|s| s.error_px).fold(0.0, f64::max);
    let mean_error_px = samples.iter().map(|s| s.error_px).sum::<f64>() / samples.len().max(1) as f64;
    Ok(MonitorReport { monitor: g.monitor.name.clone(), samples, max_error_px, mean_error_px })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::RecordingActuator;
    use crate::coords::{InputSpace, MonitorGeometry};

    fn monitors() -> Vec<CaptureGeometry> {
        let m = |name: &str, x, y, w, h, s, space| MonitorGeometry {
            name: name.into(), origin: OsPoint { x, y }, width: w, height: h, scale_factor: s, input_space: space,
        };
        vec![
            CaptureGeometry::full_monitor(m("left", -2560, -200, 2560, 1440, 1.25, InputSpace::Physical), 1280, 720).unwrap(),
            CaptureGeometry::full_monitor(m("main", 0, 0, 2880, 1800, 2.0, InputSpace::Logical), 1440, 900).unwrap(),
        ]
    }

    #[test]
    fn correct_mapping_reports_zero_error_on_every_monitor() {
        let rec = RecordingActuator::default();
        let reports = calibrate(&mut rec.clone(), &mut rec.clone(), &monitors(), &StopFlag::new()).unwrap();
        assert_eq!(reports.len(), 2);
        for r in reports {
            assert_eq!(r.samples.len(), TARGETS.len());
            assert_eq!(r.max_error_px, 0.0, "{r:?}");
        }
    }

    /// A backend that ignores negative origins (a classic multi-monitor bug).
    struct ClampsNegative(RecordingActuator);
    impl Actuator for ClampsNegative {
        fn perform(&mut self, e: &InputEvent) -> Result<()> {
            match e {
                InputEvent::MoveTo(p) => self.0.perform(&InputEvent::MoveTo(OsPoint { x: p.x.max(0), y: p.y.max(0) })),
                other => self.0.perform(other),
            }
        }
    }

    #[test]
    fn a_backend_that_loses_negative_origins_is_caught_on_that_monitor_only() {
        let rec = RecordingActuator::default();
        let mut bad = ClampsNegative(rec.clone());
        let reports = calibrate(&mut bad, &mut rec.clone(), &monitors(), &StopFlag::new()).unwrap();
        assert!(reports[0].max_error_px > 100.0, "{:?}", reports[0]);
        assert_eq!(reports[1].max_error_px, 0.0);
    }
}
