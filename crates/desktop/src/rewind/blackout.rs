//! Blacking out before a frame is stored: rectangles of the monitor (its physical pixels, so
//! they stay put when frames are scaled) and windows whose title contains a chosen text. Windows
//! are found at every frame through a [`WindowLocator`] ([`XcapWindows`] on a real desktop, a
//! fixed list in tests); when they cannot be listed the frame is not stored at all, since a
//! window the user wants hidden might be on it.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use screenpilot_agent::coords::{ImagePx, OsPoint, Point};
use screenpilot_agent::{AgentError, CaptureGeometry};

use crate::error::{DesktopError, Result};

/// Most regions and window titles.
pub const MAX_ITEMS: usize = 32;

/// A rectangle in monitor-local physical pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A window's rectangle in OS coordinates (what the window system reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRect {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

/// What is blacked out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Blackout {
    /// Rectangles of the recorded monitor.
    #[serde(default)]
    pub regions: Vec<Region>,
    /// Windows whose title contains one of these (case-insensitive).
    #[serde(default)]
    pub windows: Vec<String>,
}

impl Blackout {
    /// At most [`MAX_ITEMS`] each, regions not empty, titles not blank and at most 200 characters.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DesktopError::InvalidArgument(m));
        if self.regions.len() > MAX_ITEMS || self.windows.len() > MAX_ITEMS {
            return bad(format!("at most {MAX_ITEMS} blacked-out regions and {MAX_ITEMS} windows"));
        }
        if let Some(r) = self.regions.iter().find(|r| r.width == 0 || r.height == 0) {
            return bad(format!("blacked-out region {r:?} is empty"));
        }
        if self.windows.iter().any(|t| t.trim().is_empty() || t.chars().count() > 200) {
            return bad("a blacked-out window title must have 1 to 200 characters".into());
        }
        Ok(())
    }

    /// Whether there is anything to black out.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty() && self.windows.is_empty()
    }
}

/// Finds the windows whose title contains one of `titles` (case-insensitive).
pub trait WindowLocator: Send {
    /// Their rectangles; an error when the windows cannot be listed.
    fn locate(&mut self, titles: &[String]) -> Result<Vec<WindowRect>>;
}

/// A fixed list of windows (tests; a CLI without window blackout).
#[derive(Debug, Clone, Default)]
pub struct FixedWindows(pub Vec<(String, WindowRect)>);

impl WindowLocator for FixedWindows {
    fn locate(&mut self, titles: &[String]) -> Result<Vec<WindowRect>> {
        Ok(self.0.iter().filter(|(t, _)| title_matches(t, titles)).map(|(_, r)| *r).collect())
    }
}

/// The desktop's windows through xcap (visible, not minimised).
#[derive(Debug, Clone, Copy, Default)]
pub struct XcapWindows;

impl WindowLocator for XcapWindows {
    fn locate(&mut self, titles: &[String]) -> Result<Vec<WindowRect>> {
        if titles.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e: xcap::XCapError| DesktopError::Agent(AgentError::Capture(format!("cannot list windows: {e}")));
        let mut out = Vec::new();
        for w in xcap::Window::all().map_err(err)? {
            if w.is_minimized().unwrap_or(false) || !title_matches(&w.title().unwrap_or_default(), titles) {
                continue;
            }
            out.push(WindowRect { x: w.x().map_err(err)?, y: w.y().map_err(err)?, width: w.width().map_err(err)?, height: w.height().map_err(err)? });
        }
        Ok(out)
    }
}

fn title_matches(title: &str, wanted: &[String]) -> bool {
    let title = title.to_lowercase();
    wanted.iter().any(|w| title.contains(&w.trim().to_lowercase()))
}

/// Paints `regions` (monitor physical pixels) and `windows` (OS coordinates) black on `image`,
/// a capture described by `geometry`. Parts outside the image are ignored.
pub fn apply(image: &mut RgbImage, geometry: &CaptureGeometry, regions: &[Region], windows: &[WindowRect]) {
    let m = &geometry.monitor;
    for r in regions {
        let (x0, y0) = (f64::from(r.x), f64::from(r.y));
        fill(image, geometry, (x0, y0), (x0 + f64::from(r.width), y0 + f64::from(r.height)));
    }
    for w in windows {
        let a = m.os_to_physical(OsPoint { x: w.x, y: w.y });
        let b = m.os_to_physical(OsPoint { x: w.x.saturating_add(w.width as i32), y: w.y.saturating_add(w.height as i32) });
        fill(image, geometry, (a.x, a.y), (b.x, b.y));
    }
}

/// Fills the image pixels covering the physical rectangle `a..b` (rounded outwards).
fn fill(image: &mut RgbImage, geometry: &CaptureGeometry, a: (f64, f64), b: (f64, f64)) {
    let p0 = geometry.physical_to_image(Point::new(a.0, a.1));
    let p1 = geometry.physical_to_image(Point::new(b.0, b.1));
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let clamp = |p: Point<ImagePx>, f: fn(f64) -> f64| (f(p.x).clamp(0.0, w) as u32, f(p.y).clamp(0.0, h) as u32);
    let (x0, y0) = clamp(p0, f64::floor);
    let (x1, y1) = clamp(p1, f64::ceil);
    for y in y0..y1 {
        for x in x0..x1 {
            image.put_pixel(x, y, Rgb([0, 0, 0]));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use screenpilot_agent::coords::PhysicalRegion;
    use screenpilot_agent::{InputSpace, MonitorGeometry};

    fn monitor(scale: f64, space: InputSpace) -> MonitorGeometry {
        MonitorGeometry { name: "m".into(), origin: OsPoint { x: 100, y: 50 }, width: 200, height: 100, scale_factor: scale, input_space: space }
    }

    fn black(img: &RgbImage, x: u32, y: u32) -> bool {
        img.get_pixel(x, y).0 == [0, 0, 0]
    }

    #[test]
    fn regions_are_painted_in_monitor_pixels_also_on_a_scaled_image() {
        let g = CaptureGeometry::full_monitor(monitor(1.0, InputSpace::Physical), 100, 50).unwrap(); // half size
        let mut img = RgbImage::from_pixel(100, 50, Rgb([9, 9, 9]));
        apply(&mut img, &g, &[Region { x: 20, y: 10, width: 40, height: 20 }], &[]);
        assert!(black(&img, 10, 5) && black(&img, 29, 14));
        assert!(!black(&img, 30, 5) && !black(&img, 9, 5) && !black(&img, 10, 15));
    }

    #[test]
    fn windows_map_from_os_coordinates_and_a_region_capture_is_offset() {
        let region = PhysicalRegion { x: 50, y: 0, width: 150, height: 100 };
        let g = CaptureGeometry::region(monitor(1.0, InputSpace::Physical), region, 150, 100).unwrap();
        let mut img = RgbImage::from_pixel(150, 100, Rgb([9, 9, 9]));
        // OS (160, 60) is monitor pixel (60, 10), image pixel (10, 10).
        apply(&mut img, &g, &[], &[WindowRect { x: 160, y: 60, width: 5, height: 5 }]);
        assert!(black(&img, 10, 10) && black(&img, 14, 14));
        assert!(!black(&img, 15, 10) && !black(&img, 9, 10));
    }

    #[test]
    fn logical_coordinates_are_scaled_and_out_of_range_parts_ignored() {
        let g = CaptureGeometry::full_monitor(monitor(2.0, InputSpace::Logical), 200, 100).unwrap();
        let mut img = RgbImage::from_pixel(200, 100, Rgb([9, 9, 9]));
        apply(&mut img, &g, &[Region { x: 190, y: 90, width: 500, height: 500 }], &[WindowRect { x: 0, y: 0, width: 110, height: 55 }]);
        assert!(black(&img, 19, 9) && !black(&img, 20, 10), "the window covers OS 100..110 x 50..55 = pixels 0..20 x 0..10");
        assert!(black(&img, 199, 99) && !black(&img, 189, 99));
    }

    #[test]
    fn titles_match_case_insensitively_and_bad_settings_are_refused() {
        let mut w = FixedWindows(vec![("Password Manager".into(), WindowRect { x: 0, y: 0, width: 1, height: 1 }), ("Editor".into(), WindowRect { x: 5, y: 5, width: 1, height: 1 })]);
        assert_eq!(w.locate(&["password".into()]).unwrap().len(), 1);
        assert!(w.locate(&[]).unwrap().is_empty());
        assert!(Blackout { regions: vec![Region { x: 0, y: 0, width: 0, height: 4 }], windows: vec![] }.validate().is_err());
        assert!(Blackout { regions: vec![], windows: vec!["  ".into()] }.validate().is_err());
        assert!(Blackout { regions: vec![Region { x: 0, y: 0, width: 4, height: 4 }], windows: vec!["Bank".into()] }.validate().is_ok());
    }
}
