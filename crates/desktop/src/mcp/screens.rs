//! The screen as the MCP tools see it: monitors, windows and captures behind [`Screens`]
//! (the real desktop through xcap in [`DesktopScreens`]; a painted fake in tests), and
//! [`capture_target`], which turns a call's [`Target`] into a screenshot with its geometry.
//! A region must lie inside one monitor; a window or monitor that does not exist is a bad
//! argument ([`DesktopError::InvalidArgument`]), not a capture failure.

use screenpilot_agent::coords::OsPoint;
use screenpilot_agent::Screenshot;

use super::tools::Target;
use crate::error::{DesktopError, Result};
use crate::screen::{self, MonitorInfo, WindowInfo};

/// Monitors, windows and captures.
pub trait Screens: Send + Sync {
    /// Every monitor; the first is the primary one.
    fn monitors(&self) -> Result<Vec<MonitorInfo>>;
    /// Visible windows with a title.
    fn windows(&self) -> Result<Vec<WindowInfo>>;
    /// One monitor, whole.
    fn capture_monitor(&self, index: usize) -> Result<Screenshot>;
    /// One window (as the part of its monitor it covers).
    fn capture_window(&self, id: u32) -> Result<Screenshot>;
}

/// The real desktop (xcap).
#[derive(Debug, Default, Clone, Copy)]
pub struct DesktopScreens;

impl Screens for DesktopScreens {
    fn monitors(&self) -> Result<Vec<MonitorInfo>> {
        screen::monitors()
    }

    fn windows(&self) -> Result<Vec<WindowInfo>> {
        screen::windows()
    }

    fn capture_monitor(&self, index: usize) -> Result<Screenshot> {
        screen::capture_monitor(index)
    }

    fn capture_window(&self, id: u32) -> Result<Screenshot> {
        screen::capture_window(id)
    }
}

fn bad(msg: String) -> DesktopError {
    DesktopError::InvalidArgument(msg)
}

/// The monitor holding OS point `p` (monitor rectangles are in OS coordinates, sizes in
/// physical pixels divided by the scale factor where the OS speaks logical units; a point
/// inside the physical rectangle from the origin is accepted, and the capture's geometry checks
/// it exactly).
pub fn monitor_at(monitors: &[MonitorInfo], p: OsPoint) -> Option<usize> {
    monitors.iter().position(|m| {
        let (w, h) = os_size(m);
        let (x, y) = (f64::from(p.x), f64::from(p.y));
        x >= f64::from(m.x) && y >= f64::from(m.y) && x < f64::from(m.x) + w && y < f64::from(m.y) + h
    })
}

/// A monitor's size in OS coordinates (xcap reports OS positions and physical sizes; on
/// platforms whose OS coordinates are logical the two differ by the scale factor).
fn os_size(m: &MonitorInfo) -> (f64, f64) {
    let s = if cfg!(any(target_os = "macos", windows)) { m.scale_factor.max(1e-6) } else { 1.0 };
    (f64::from(m.width) / s, f64::from(m.height) / s)
}

/// Monitor `i` exists (else a bad argument naming how many there are).
pub fn check_monitor(screens: &dyn Screens, i: usize) -> Result<()> {
    let n = screens.monitors()?.len();
    if i >= n {
        return Err(bad(format!("no monitor {i}: there are {n} (list_monitors)")));
    }
    Ok(())
}

/// The screenshot a call is about.
pub fn capture_target(screens: &dyn Screens, target: Target) -> Result<Screenshot> {
    match target {
        Target::Primary => screens.capture_monitor(0),
        Target::Monitor(i) => {
            check_monitor(screens, i)?;
            screens.capture_monitor(i)
        }
        Target::Window(id) => {
            if !screens.windows()?.iter().any(|w| w.id == id) {
                return Err(bad(format!("no window with id {id} (closed, minimised or untitled; list_windows)")));
            }
            screens.capture_window(id)
        }
        Target::Region { x, y, width, height } => {
            let monitors = screens.monitors()?;
            let outside = || bad(format!("region {width}x{height} at ({x}, {y}) is not inside one monitor (list_monitors)"));
            let index = monitor_at(&monitors, OsPoint { x, y }).ok_or_else(outside)?;
            let (mw, mh) = os_size(&monitors[index]);
            let m = &monitors[index];
            let (right, bottom) = (f64::from(x) + f64::from(width), f64::from(y) + f64::from(height));
            if right > f64::from(m.x) + mw || bottom > f64::from(m.y) + mh {
                return Err(outside());
            }
            let full = screens.capture_monitor(index)?;
            let g = &full.geometry;
            // OS rectangle -> physical pixels -> image pixels of the full capture.
            let p0 = g.physical_to_image(g.monitor.os_to_physical(OsPoint { x, y }));
            let end = OsPoint { x: x.saturating_add(width as i32), y: y.saturating_add(height as i32) };
            let p1 = g.physical_to_image(g.monitor.os_to_physical(end));
            screen::crop(&full, p0.x, p0.y, p1.x - p0.x, p1.y - p0.y)
        }
    }
}

/// Painted screens for tests: monitors side by side, each image a gradient, windows as
/// rectangles of monitor 0.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::{Arc, Mutex};

    use image::RgbImage;
    use screenpilot_agent::coords::{CaptureGeometry, InputSpace, MonitorGeometry};

    use super::*;

    pub struct FakeScreens {
        pub monitors: Vec<MonitorInfo>,
        pub windows: Vec<(WindowInfo, (u32, u32, u32, u32))>,
        /// Added to every pixel's blue channel (tests change the screen with it).
        pub tint: Mutex<u8>,
    }

    impl FakeScreens {
        pub fn new() -> Self {
            let m = |index: usize, name: &str, x: i32| MonitorInfo { index, name: name.into(), x, y: 0, width: 640, height: 400, scale_factor: 1.0 };
            Self {
                monitors: vec![m(0, "primary", 0), m(1, "left", -640)],
                windows: vec![(WindowInfo { id: 42, title: "Editor".into(), app: "edit".into() }, (100, 50, 200, 120))],
                tint: Mutex::new(0),
            }
        }
    }

    impl Screens for FakeScreens {
        fn monitors(&self) -> Result<Vec<MonitorInfo>> {
            Ok(self.monitors.clone())
        }

        fn windows(&self) -> Result<Vec<WindowInfo>> {
            Ok(self.windows.iter().map(|w| w.0.clone()).collect())
        }

        fn capture_monitor(&self, index: usize) -> Result<Screenshot> {
            let m = self.monitors.get(index).ok_or_else(|| bad(format!("no monitor {index}")))?;
            let tint = *self.tint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let img = RgbImage::from_fn(m.width, m.height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, tint]));
            let geo = MonitorGeometry {
                name: m.name.clone(),
                origin: OsPoint { x: m.x, y: m.y },
                width: m.width,
                height: m.height,
                scale_factor: m.scale_factor,
                input_space: InputSpace::Physical,
            };
            Ok(Screenshot { image: Arc::new(img), geometry: CaptureGeometry::full_monitor(geo, m.width, m.height)? })
        }

        fn capture_window(&self, id: u32) -> Result<Screenshot> {
            let (_, (x, y, w, h)) = self.windows.iter().find(|w| w.0.id == id).ok_or_else(|| bad(format!("no window {id}")))?;
            let full = self.capture_monitor(0)?;
            screen::crop(&full, f64::from(*x), f64::from(*y), f64::from(*w), f64::from(*h))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::fake::FakeScreens;
    use super::*;
    use screenpilot_agent::coords::Point;

    #[test]
    fn targets_capture_the_right_pixels_and_map_back_to_the_screen() {
        let s = FakeScreens::new();
        let primary = capture_target(&s, Target::Primary).unwrap();
        assert_eq!(primary.image.dimensions(), (640, 400));
        let left = capture_target(&s, Target::Monitor(1)).unwrap();
        assert_eq!(left.geometry.monitor.name, "left");
        let win = capture_target(&s, Target::Window(42)).unwrap();
        assert_eq!(win.image.dimensions(), (200, 120));
        assert_eq!(win.image.get_pixel(0, 0).0[..2], [100, 50]);
        // A region on the monitor left of the primary one: pixels and the map back.
        let r = capture_target(&s, Target::Region { x: -600, y: 10, width: 100, height: 30 }).unwrap();
        assert_eq!(r.image.dimensions(), (100, 30));
        assert_eq!(r.image.get_pixel(0, 0).0[..2], [40, 10]);
        let os = r.geometry.image_to_os(Point::new(5.0, 5.0)).unwrap();
        assert_eq!((os.x, os.y), (-595, 15));
    }

    #[test]
    fn missing_monitors_windows_and_oversized_regions_are_bad_arguments() {
        let s = FakeScreens::new();
        let kind = |t| capture_target(&s, t).unwrap_err().kind();
        assert_eq!(kind(Target::Monitor(2)), "invalid_argument");
        assert_eq!(kind(Target::Window(999_999_999)), "invalid_argument");
        assert_eq!(kind(Target::Region { x: 0, y: 0, width: 100_000, height: 100_000 }), "invalid_argument");
        // Straddling two monitors is not one region.
        assert_eq!(kind(Target::Region { x: -50, y: 0, width: 100, height: 100 }), "invalid_argument");
        assert_eq!(kind(Target::Region { x: 5000, y: 0, width: 10, height: 10 }), "invalid_argument");
        assert_eq!(monitor_at(&s.monitors, OsPoint { x: -1, y: 0 }), Some(1));
        assert_eq!(monitor_at(&s.monitors, OsPoint { x: 0, y: 400 }), None);
    }
}
