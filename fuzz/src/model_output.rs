//! Fuzz target: what the model writes (grounding boxes/points, `computer_use` tool calls) is
//! parsed and mapped onto a monitor without panicking, and every point an action would touch
//! lies on that monitor.
//!
//! Input: model text, optionally followed by a NUL byte and bytes describing one more capture
//! geometry (origin, sizes, scale, region, image size) to map onto besides the fixed ones.
//!
//! Only std, serde_json and screenpilot-agent are used: crates/agent/tests/fuzz_regressions.rs
//! includes this file to replay the corpus in `cargo test`.

use screenpilot_agent::coords::{CaptureGeometry, InputSpace, MonitorGeometry, OsPoint, PhysicalRegion};
use screenpilot_agent::screen_action::Resolved;

fn monitor(name: &str, x: i32, y: i32, w: u32, h: u32, scale: f64, space: InputSpace) -> MonitorGeometry {
    MonitorGeometry { name: name.into(), origin: OsPoint { x, y }, width: w, height: h, scale_factor: scale, input_space: space }
}

/// A few realistic set-ups: a left monitor at negative coordinates, a HiDPI logical-space one,
/// a region capture resized to an odd size.
fn fixed_geometries() -> Vec<CaptureGeometry> {
    let mut out = Vec::new();
    if let Ok(g) = CaptureGeometry::full_monitor(monitor("left", -1920, -40, 1920, 1080, 1.5, InputSpace::Physical), 1280, 720) {
        out.push(g);
    }
    if let Ok(g) = CaptureGeometry::full_monitor(monitor("retina", 0, 0, 2880, 1800, 2.0, InputSpace::Logical), 1440, 900) {
        out.push(g);
    }
    let region = PhysicalRegion { x: 100, y: 37, width: 801, height: 333 };
    if let Ok(g) = CaptureGeometry::region(monitor("region", 1920, 0, 2560, 1440, 1.25, InputSpace::Logical), region, 97, 41) {
        out.push(g);
    }
    out
}

/// Little-endian fields read off the front of a byte slice (missing bytes read as 0).
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }
    fn flag(&mut self) -> bool {
        self.take::<1>()[0] & 1 == 1
    }
}

fn geometry_from(bytes: &[u8]) -> Option<CaptureGeometry> {
    let mut f = Fields(bytes);
    let space = if f.flag() { InputSpace::Logical } else { InputSpace::Physical };
    // Scale factors from 0 to ~65 in steps of 1/1000 (validate() accepts 0.1..=16).
    let scale = f64::from(u16::from_le_bytes(f.take())) / 1000.0;
    let m = monitor("fuzz", f.i32(), f.i32(), f.u32(), f.u32(), scale, space);
    let region = PhysicalRegion { x: f.u32(), y: f.u32(), width: f.u32(), height: f.u32() };
    let (iw, ih) = (f.u32(), f.u32());
    let g = if f.flag() { CaptureGeometry::full_monitor(m, iw, ih) } else { CaptureGeometry::region(m, region, iw, ih) };
    g.ok()
}

/// One input: must not panic.
pub fn run(data: &[u8]) {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let text = String::from_utf8_lossy(text);
    let mut geometries = fixed_geometries();
    if let Some(rest) = rest {
        if let Some(g) = geometry_from(rest) {
            geometries.push(g);
        }
    }

    if let Ok(groundings) = screenpilot_agent::parse_grounding(&text) {
        for gr in &groundings {
            let target = gr.shape.target();
            for g in &geometries {
                if let Ok(p) = g.rel_to_os(target) {
                    assert!(g.monitor.contains_os(p), "grounding {gr:?} mapped off the monitor: {p:?} on {g:?}");
                }
            }
        }
    }
    let _ = screenpilot_agent::json_extract::extract_json_values(&text);
    if let Ok(actions) = screenpilot_agent::parse_tool_calls(&text) {
        for a in &actions {
            let _ = a.is_final();
            for g in &geometries {
                if let Ok(Resolved::Act(act)) = screenpilot_agent::resolve(a, g) {
                    for p in act.points() {
                        assert!(g.monitor.contains_os(p), "action {a:?} mapped off the monitor: {p:?} on {g:?}");
                    }
                }
            }
        }
    }
}
