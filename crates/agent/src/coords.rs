//! Pure coordinate mapping, with the unit of every value named in its type.
//!
//! The chain is: Qwen3-VL relative coordinates ([`Rel1000`], 0..=1000, x first)
//! -> pixels of the captured image ([`ImagePx`]) -> physical pixels of the monitor,
//! local to its top-left corner ([`PhysicalPx`]) -> the integer coordinates the OS
//! input API wants ([`OsPoint`]): global physical pixels on X11/Windows, or global
//! logical points (physical / scale factor) on macOS ([`InputSpace`]). Monitor origins
//! may be negative (monitors left of or above the primary). A capture may cover only a
//! region of a monitor, and the image may be resized relative to that region.
//! Nothing here has side effects; points that leave the target monitor are refused.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// Unit marker: Qwen3-VL relative coordinates, 0..=1000 on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rel1000;
/// Unit marker: pixels of the captured image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ImagePx;
/// Unit marker: physical pixels of a monitor, relative to its top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhysicalPx;
/// Unit marker: logical pixels (OS points) = physical pixels / scale factor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogicalPx;

/// A point whose unit is carried by `U`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point<U> {
    /// Horizontal coordinate, growing to the right.
    pub x: f64,
    /// Vertical coordinate, growing downwards.
    pub y: f64,
    #[serde(skip)]
    unit: PhantomData<U>,
}

impl<U> Point<U> {
    /// A point in unit `U`.
    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y, unit: PhantomData }
    }
}

/// An axis-aligned box in unit `U` (`min` is the top-left, `max` the bottom-right corner).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rect<U> {
    /// Top-left corner.
    pub min: Point<U>,
    /// Bottom-right corner.
    pub max: Point<U>,
}

impl<U> Rect<U> {
    /// A box from two corners in any order.
    pub fn from_corners(a: Point<U>, b: Point<U>) -> Self {
        Self {
            min: Point::new(a.x.min(b.x), a.y.min(b.y)),
            max: Point::new(a.x.max(b.x), a.y.max(b.y)),
        }
    }

    /// The centre of the box.
    pub fn center(&self) -> Point<U> {
        Point::new((self.min.x + self.max.x) / 2.0, (self.min.y + self.max.y) / 2.0)
    }

    /// Whether `p` lies inside the box (edges included).
    pub fn contains(&self, p: Point<U>) -> bool {
        p.x >= self.min.x && p.x <= self.max.x && p.y >= self.min.y && p.y <= self.max.y
    }
}

/// A point in the OS input API's coordinate space (see [`InputSpace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OsPoint {
    /// Global horizontal coordinate.
    pub x: i32,
    /// Global vertical coordinate.
    pub y: i32,
}

/// What unit the OS input API uses for global coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputSpace {
    /// Global physical pixels (X11, Windows with per-monitor DPI awareness).
    Physical,
    /// Global logical points: monitor-local physical pixels / scale factor (macOS).
    Logical,
}

/// One monitor as the capture and the input API see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorGeometry {
    /// Human readable name (for reports).
    pub name: String,
    /// Top-left corner in OS input coordinates; may be negative.
    pub origin: OsPoint,
    /// Width in physical pixels.
    pub width: u32,
    /// Height in physical pixels.
    pub height: u32,
    /// Physical pixels per logical pixel (1, 1.25, 1.5, 2, ...).
    pub scale_factor: f64,
    /// Unit of the OS input coordinates.
    pub input_space: InputSpace,
}

impl MonitorGeometry {
    /// Checks sizes and the scale factor.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(AgentError::InvalidGeometry(format!("monitor {} has zero size", self.name)));
        }
        if !(self.scale_factor.is_finite() && self.scale_factor >= 0.1 && self.scale_factor <= 16.0) {
            return Err(AgentError::InvalidGeometry(format!("scale factor {}", self.scale_factor)));
        }
        Ok(())
    }

    /// Size of the monitor in OS input units.
    pub fn os_size(&self) -> (f64, f64) {
        match self.input_space {
            InputSpace::Physical => (f64::from(self.width), f64::from(self.height)),
            InputSpace::Logical => (
                f64::from(self.width) / self.scale_factor,
                f64::from(self.height) / self.scale_factor,
            ),
        }
    }

    /// Whether an OS point lies on this monitor.
    pub fn contains_os(&self, p: OsPoint) -> bool {
        let (w, h) = self.os_size();
        let dx = f64::from(p.x) - f64::from(self.origin.x);
        let dy = f64::from(p.y) - f64::from(self.origin.y);
        dx >= 0.0 && dy >= 0.0 && dx < w.ceil() && dy < h.ceil()
    }

    /// Converts monitor-local physical pixels to logical pixels.
    pub fn to_logical(&self, p: Point<PhysicalPx>) -> Point<LogicalPx> {
        Point::new(p.x / self.scale_factor, p.y / self.scale_factor)
    }

    /// Maps a monitor-local physical point to OS input coordinates.
    /// Refuses points outside the monitor (the right/bottom edge itself maps to the last pixel).
    pub fn physical_to_os(&self, p: Point<PhysicalPx>) -> Result<OsPoint> {
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let inside = p.x.is_finite() && p.y.is_finite() && p.x >= 0.0 && p.y >= 0.0 && p.x <= w && p.y <= h;
        if !inside {
            return Err(AgentError::OutsideMonitor { x: p.x, y: p.y, width: self.width, height: self.height });
        }
        let (ux, uy) = match self.input_space {
            InputSpace::Physical => (p.x, p.y),
            InputSpace::Logical => (p.x / self.scale_factor, p.y / self.scale_factor),
        };
        // The right/bottom edge itself belongs to the last unit.
        let (ow, oh) = self.os_size();
        let lx = ux.floor().min(ow.ceil() - 1.0);
        let ly = uy.floor().min(oh.ceil() - 1.0);
        Ok(OsPoint { x: to_i32(f64::from(self.origin.x) + lx)?, y: to_i32(f64::from(self.origin.y) + ly)? })
    }

    /// Inverse of [`Self::physical_to_os`] (to the top-left of the OS unit).
    pub fn os_to_physical(&self, p: OsPoint) -> Point<PhysicalPx> {
        let dx = f64::from(p.x) - f64::from(self.origin.x);
        let dy = f64::from(p.y) - f64::from(self.origin.y);
        match self.input_space {
            InputSpace::Physical => Point::new(dx, dy),
            InputSpace::Logical => Point::new(dx * self.scale_factor, dy * self.scale_factor),
        }
    }
}

fn to_i32(v: f64) -> Result<i32> {
    if v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX) {
        // In range and integral (callers floor first), so the cast is exact.
        Ok(v as i32)
    } else {
        Err(AgentError::InvalidGeometry(format!("coordinate {v} does not fit the OS range")))
    }
}

/// A rectangle of monitor-local physical pixels (a region capture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalRegion {
    /// Left edge, monitor-local physical px.
    pub x: u32,
    /// Top edge, monitor-local physical px.
    pub y: u32,
    /// Width in physical px.
    pub width: u32,
    /// Height in physical px.
    pub height: u32,
}

/// How a captured image relates to the monitor it was taken from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureGeometry {
    /// The monitor the image shows (the target monitor for actions).
    pub monitor: MonitorGeometry,
    /// The part of the monitor the image shows.
    pub region: PhysicalRegion,
    /// Image width in pixels (may differ from the region if the image was resized).
    pub image_width: u32,
    /// Image height in pixels.
    pub image_height: u32,
}

impl CaptureGeometry {
    /// A capture of the whole monitor, stored as an image of the given size.
    pub fn full_monitor(monitor: MonitorGeometry, image_width: u32, image_height: u32) -> Result<Self> {
        let region = PhysicalRegion { x: 0, y: 0, width: monitor.width, height: monitor.height };
        Self::region(monitor, region, image_width, image_height)
    }

    /// A capture of a region of a monitor; the region must lie inside the monitor.
    pub fn region(monitor: MonitorGeometry, region: PhysicalRegion, image_width: u32, image_height: u32) -> Result<Self> {
        monitor.validate()?;
        let fits = region.width > 0
            && region.height > 0
            && u64::from(region.x) + u64::from(region.width) <= u64::from(monitor.width)
            && u64::from(region.y) + u64::from(region.height) <= u64::from(monitor.height);
        if !fits {
            return Err(AgentError::InvalidGeometry(format!("region {region:?} is not inside monitor {}", monitor.name)));
        }
        if image_width == 0 || image_height == 0 {
            return Err(AgentError::InvalidGeometry("image has zero size".into()));
        }
        Ok(Self { monitor, region, image_width, image_height })
    }

    /// Relative 0..=1000 -> image pixels. Refuses values outside 0..=1000.
    pub fn rel_to_image(&self, p: Point<Rel1000>) -> Result<Point<ImagePx>> {
        let ok = |v: f64| v.is_finite() && (0.0..=1000.0).contains(&v);
        if !(ok(p.x) && ok(p.y)) {
            return Err(AgentError::RelativeOutOfRange(vec![p.x, p.y]));
        }
        Ok(Point::new(p.x / 1000.0 * f64::from(self.image_width), p.y / 1000.0 * f64::from(self.image_height)))
    }

    /// Image pixels -> monitor-local physical pixels.
    pub fn image_to_physical(&self, p: Point<ImagePx>) -> Point<PhysicalPx> {
        let sx = f64::from(self.region.width) / f64::from(self.image_width);
        let sy = f64::from(self.region.height) / f64::from(self.image_height);
        Point::new(f64::from(self.region.x) + p.x * sx, f64::from(self.region.y) + p.y * sy)
    }

    /// Monitor-local physical pixels -> image pixels (inverse of [`Self::image_to_physical`]).
    pub fn physical_to_image(&self, p: Point<PhysicalPx>) -> Point<ImagePx> {
        let sx = f64::from(self.image_width) / f64::from(self.region.width);
        let sy = f64::from(self.image_height) / f64::from(self.region.height);
        Point::new((p.x - f64::from(self.region.x)) * sx, (p.y - f64::from(self.region.y)) * sy)
    }

    /// Image pixels -> relative 0..=1000.
    pub fn image_to_rel(&self, p: Point<ImagePx>) -> Point<Rel1000> {
        Point::new(p.x * 1000.0 / f64::from(self.image_width), p.y * 1000.0 / f64::from(self.image_height))
    }

    /// The whole chain: relative -> OS input coordinates, refusing anything off the monitor.
    pub fn rel_to_os(&self, p: Point<Rel1000>) -> Result<OsPoint> {
        let image = self.rel_to_image(p)?;
        self.image_to_os(image)
    }

    /// Image pixels -> OS input coordinates, refusing anything off the captured region's monitor.
    pub fn image_to_os(&self, p: Point<ImagePx>) -> Result<OsPoint> {
        let os = self.monitor.physical_to_os(self.image_to_physical(p))?;
        if self.monitor.contains_os(os) {
            Ok(os)
        } else {
            let phys = self.monitor.os_to_physical(os);
            Err(AgentError::OutsideMonitor { x: phys.x, y: phys.y, width: self.monitor.width, height: self.monitor.height })
        }
    }

    /// The relative coordinate at which the model would see the centre of OS point `p`
    /// in this capture (inverse of [`Self::rel_to_os`]).
    pub fn os_to_rel(&self, p: OsPoint) -> Point<Rel1000> {
        let corner = self.monitor.os_to_physical(p);
        let unit = match self.monitor.input_space {
            InputSpace::Physical => 1.0,
            InputSpace::Logical => self.monitor.scale_factor,
        };
        let centre = Point::new(corner.x + unit / 2.0, corner.y + unit / 2.0);
        self.image_to_rel(self.physical_to_image(centre))
    }
}

#[cfg(test)]
#[path = "coords_tests.rs"]
mod tests;
