//! Screen capture for the app: list monitors and windows, capture a monitor or a window
//! (as a region of its monitor), or cut a region out of a frozen full-monitor frame.
//! Images stay in physical pixels; every [`Screenshot`] carries its `CaptureGeometry`
//! (monitor origin, scale factor, region), so model coordinates map back exactly.

use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;

use screenpilot_agent::coords::PhysicalRegion;
use screenpilot_agent::xcap_backend::{MonitorChoice, XcapCapture};
use screenpilot_agent::{Capture, CaptureGeometry, ImagePx, Point, Screenshot};

use crate::error::{DesktopError, Result};

/// A monitor as the picker shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MonitorInfo {
    /// Position in the list (what [`capture_monitor`] takes).
    pub index: usize,
    /// OS name.
    pub name: String,
    /// Top-left in OS coordinates.
    pub x: i32,
    /// Top-left in OS coordinates.
    pub y: i32,
    /// Physical pixels.
    pub width: u32,
    /// Physical pixels.
    pub height: u32,
    /// Physical per logical pixel.
    pub scale_factor: f64,
}

/// A window as the picker shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowInfo {
    /// xcap's window id.
    pub id: u32,
    /// Title.
    pub title: String,
    /// Application.
    pub app: String,
}

/// How the UI maps image pixels to OS coordinates (for hover read-outs):
/// `os = origin + image * scale` on each axis.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GeometryView {
    /// Image size.
    pub image_width: u32,
    /// Image size.
    pub image_height: u32,
    /// OS coordinate of image pixel (0, 0).
    pub origin_x: f64,
    /// OS coordinate of image pixel (0, 0).
    pub origin_y: f64,
    /// OS units per image pixel.
    pub scale_x: f64,
    /// OS units per image pixel.
    pub scale_y: f64,
    /// Monitor name.
    pub monitor: String,
    /// Monitor scale factor.
    pub scale_factor: f64,
}

fn cap_err(e: impl std::fmt::Display) -> DesktopError {
    DesktopError::Agent(screenpilot_agent::AgentError::Capture(e.to_string()))
}

/// The kind of desktop capture runs on (what a failed capture should tell the user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// macOS: needs the Screen Recording permission.
    MacOs,
    /// Windows.
    Windows,
    /// Linux on X11.
    X11,
    /// Linux on Wayland: capture goes through the desktop portal.
    Wayland,
}

impl Platform {
    /// This build's platform; on Linux `wayland` says whether the session is a Wayland one
    /// (the caller reads `$WAYLAND_DISPLAY`).
    pub fn current(wayland: bool) -> Self {
        if cfg!(target_os = "macos") {
            Self::MacOs
        } else if cfg!(windows) {
            Self::Windows
        } else if wayland {
            Self::Wayland
        } else {
            Self::X11
        }
    }

    /// What a person can do when capture fails here.
    pub fn capture_help(self) -> &'static str {
        match self {
            Self::MacOs => "macOS lets an app see the screen only with permission: open System Settings → Privacy & Security → Screen Recording, turn ScreenPilot on, then quit and reopen ScreenPilot",
            Self::Windows => "Check that the screen is not locked and that no policy blocks screen capture, then try again",
            Self::Wayland => "On Wayland, screenshots go through the desktop portal: install xdg-desktop-portal and the one for your desktop (xdg-desktop-portal-gnome, -kde or -wlr), log in again, and allow the screen-sharing request when it appears",
            Self::X11 => "Check that $DISPLAY points to a running X server that this user may connect to",
        }
    }
}

/// Capture failures carry what this platform needs; other errors pass unchanged.
pub fn with_capture_help(e: DesktopError, platform: Platform) -> DesktopError {
    match e {
        DesktopError::Agent(screenpilot_agent::AgentError::Capture(message)) => DesktopError::Capture { message, help: platform.capture_help() },
        other => other,
    }
}

/// Every monitor.
pub fn monitors() -> Result<Vec<MonitorInfo>> {
    Ok(XcapCapture::monitors()?
        .into_iter()
        .enumerate()
        .map(|(index, m)| MonitorInfo {
            index,
            name: m.name,
            x: m.origin.x,
            y: m.origin.y,
            width: m.width,
            height: m.height,
            scale_factor: m.scale_factor,
        })
        .collect())
}

/// Every visible, non-minimised window with a title.
pub fn windows() -> Result<Vec<WindowInfo>> {
    let mut out = Vec::new();
    for w in xcap::Window::all().map_err(cap_err)? {
        if w.is_minimized().unwrap_or(true) {
            continue;
        }
        let title = w.title().unwrap_or_default();
        if title.is_empty() {
            continue;
        }
        out.push(WindowInfo { id: w.id().map_err(cap_err)?, title, app: w.app_name().unwrap_or_default() });
    }
    Ok(out)
}

/// A whole monitor.
pub fn capture_monitor(index: usize) -> Result<Screenshot> {
    Ok(XcapCapture { monitor: MonitorChoice::Index(index), region: None }.capture()?)
}

/// A window, captured as the part of its monitor it covers (clipped to that monitor).
pub fn capture_window(id: u32) -> Result<Screenshot> {
    let all = xcap::Window::all().map_err(cap_err)?;
    let w = all
        .iter()
        .find(|w| w.id().ok() == Some(id))
        .ok_or_else(|| DesktopError::InvalidArgument(format!("no window with id {id}")))?;
    let monitor = w.current_monitor().map_err(cap_err)?;
    let name = monitor.name().map_err(cap_err)?;
    let (mx, my) = (monitor.x().map_err(cap_err)?, monitor.y().map_err(cap_err)?);
    let full = XcapCapture { monitor: MonitorChoice::Name(name), region: None }.capture()?;
    let (fw, fh) = (i64::from(full.geometry.monitor.width), i64::from(full.geometry.monitor.height));
    let x0 = (i64::from(w.x().map_err(cap_err)?) - i64::from(mx)).clamp(0, fw);
    let y0 = (i64::from(w.y().map_err(cap_err)?) - i64::from(my)).clamp(0, fh);
    let x1 = (x0 + i64::from(w.width().map_err(cap_err)?)).clamp(0, fw);
    let y1 = (y0 + i64::from(w.height().map_err(cap_err)?)).clamp(0, fh);
    crop(&full, x0 as f64, y0 as f64, (x1 - x0) as f64, (y1 - y0) as f64)
}

/// The part of `frozen` inside the rectangle (image pixels of `frozen`), with its geometry.
pub fn crop(frozen: &Screenshot, x: f64, y: f64, width: f64, height: f64) -> Result<Screenshot> {
    let g = &frozen.geometry;
    let finite = [x, y, width, height].iter().all(|v| v.is_finite());
    if !finite || width < 8.0 || height < 8.0 {
        return Err(DesktopError::InvalidArgument(format!("region {width}x{height} is too small (at least 8x8)")));
    }
    let (iw, ih) = (f64::from(g.image_width), f64::from(g.image_height));
    let (x0, y0) = (x.clamp(0.0, iw).round(), y.clamp(0.0, ih).round());
    let (x1, y1) = ((x + width).clamp(0.0, iw).round(), (y + height).clamp(0.0, ih).round());
    if x1 - x0 < 8.0 || y1 - y0 < 8.0 {
        return Err(DesktopError::InvalidArgument("region lies outside the capture".into()));
    }
    let p0 = g.image_to_physical(Point::<ImagePx>::new(x0, y0));
    let p1 = g.image_to_physical(Point::<ImagePx>::new(x1, y1));
    let region = PhysicalRegion {
        x: p0.x.round() as u32,
        y: p0.y.round() as u32,
        width: (p1.x - p0.x).round() as u32,
        height: (p1.y - p0.y).round() as u32,
    };
    let (cx, cy, cw, ch) = (x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32);
    let image: RgbImage = image::imageops::crop_imm(frozen.image.as_ref(), cx, cy, cw, ch).to_image();
    let geometry = CaptureGeometry::region(g.monitor.clone(), region, cw, ch)?;
    Ok(Screenshot { image: Arc::new(image), geometry })
}

/// The affine image → OS map of a capture.
pub fn geometry_view(g: &CaptureGeometry) -> GeometryView {
    let os0 = g.monitor.os_to_physical(g.monitor.origin); // (0, 0)
    let phys0 = g.image_to_physical(Point::<ImagePx>::new(0.0, 0.0));
    let phys1 = g.image_to_physical(Point::<ImagePx>::new(1.0, 1.0));
    let per_unit = match g.monitor.input_space {
        screenpilot_agent::InputSpace::Physical => 1.0,
        screenpilot_agent::InputSpace::Logical => g.monitor.scale_factor,
    };
    GeometryView {
        image_width: g.image_width,
        image_height: g.image_height,
        origin_x: f64::from(g.monitor.origin.x) + (phys0.x - os0.x) / per_unit,
        origin_y: f64::from(g.monitor.origin.y) + (phys0.y - os0.y) / per_unit,
        scale_x: (phys1.x - phys0.x) / per_unit,
        scale_y: (phys1.y - phys0.y) / per_unit,
        monitor: g.monitor.name.clone(),
        scale_factor: g.monitor.scale_factor,
    }
}

/// PNG bytes of an image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(cap_err)?;
    Ok(out.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn a_failed_capture_says_what_the_platform_needs() {
        let failed = || cap_err("XcbConnError(Connection)");
        let mac = with_capture_help(failed(), Platform::MacOs).to_string();
        assert!(mac.contains("XcbConnError") && mac.contains("Screen Recording"), "{mac}");
        let wayland = with_capture_help(failed(), Platform::Wayland);
        assert_eq!(wayland.kind(), "capture");
        assert!(wayland.to_string().contains("xdg-desktop-portal"), "{wayland}");
        // Not a capture failure: unchanged.
        let other = with_capture_help(DesktopError::NoCapture, Platform::MacOs);
        assert_eq!(other.kind(), "no_capture");
    }

    use super::*;
    use screenpilot_agent::{InputSpace, MonitorGeometry, OsPoint};

    fn shot(scale: f64, input_space: InputSpace) -> Screenshot {
        let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: -1920, y: 100 }, width: 400, height: 200, scale_factor: scale, input_space };
        let img = RgbImage::from_fn(400, 200, |x, y| image::Rgb([x as u8, y as u8, 0]));
        Screenshot { image: Arc::new(img), geometry: CaptureGeometry::full_monitor(m, 400, 200).unwrap() }
    }

    #[test]
    fn crop_keeps_pixels_and_maps_to_the_screen() {
        let s = crop(&shot(2.0, InputSpace::Physical), 100.0, 50.0, 40.0, 20.0).unwrap();
        assert_eq!(s.image.dimensions(), (40, 20));
        assert_eq!(s.image.get_pixel(0, 0).0, [100, 50, 0]);
        let os = s.geometry.image_to_os(Point::new(10.0, 5.0)).unwrap();
        assert_eq!((os.x, os.y), (-1920 + 110, 100 + 55));
        let v = geometry_view(&s.geometry);
        assert_eq!((v.origin_x, v.origin_y, v.scale_x), (-1820.0, 150.0, 1.0));
    }

    #[test]
    fn logical_input_space_halves_the_scale() {
        let v = geometry_view(&crop(&shot(2.0, InputSpace::Logical), 100.0, 50.0, 40.0, 20.0).unwrap().geometry);
        assert_eq!((v.origin_x, v.origin_y, v.scale_x, v.scale_y), (-1920.0 + 50.0, 125.0, 0.5, 0.5));
    }

    #[test]
    fn rejects_tiny_or_outside_regions() {
        let s = shot(1.0, InputSpace::Physical);
        assert!(crop(&s, 0.0, 0.0, 4.0, 40.0).is_err());
        assert!(crop(&s, 500.0, 0.0, 40.0, 40.0).is_err());
        assert!(crop(&s, f64::NAN, 0.0, 40.0, 40.0).is_err());
    }
}
