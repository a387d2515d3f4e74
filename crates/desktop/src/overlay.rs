//! Grounding overlays: the boxes and points a model answer contains (parsed with
//! `screenpilot_agent::parse_grounding`), in image pixels for drawing and in OS
//! coordinates for the label.

use serde::Serialize;

use screenpilot_agent::{parse_grounding, CaptureGeometry, Shape};

use crate::error::Result;

/// One shape to draw.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OverlayShape {
    /// `box` or `point`.
    pub kind: &'static str,
    /// The model's label.
    pub label: String,
    /// Image pixels (for a point, x1 = x2 and y1 = y2).
    pub x1: f64,
    /// Image pixels.
    pub y1: f64,
    /// Image pixels.
    pub x2: f64,
    /// Image pixels.
    pub y2: f64,
    /// OS coordinate of the target (box centre or point), if it is on the monitor.
    pub screen_x: Option<i32>,
    /// OS coordinate of the target.
    pub screen_y: Option<i32>,
}

/// Every box and point in `text`, mapped onto the capture.
pub fn shapes(text: &str, g: &CaptureGeometry) -> Result<Vec<OverlayShape>> {
    let mut out = Vec::new();
    for gr in parse_grounding(text)? {
        let (kind, a, b) = match gr.shape {
            Shape::Box(r) => ("box", r.min, r.max),
            Shape::Point(p) => ("point", p, p),
        };
        let (a, b) = (g.rel_to_image(a)?, g.rel_to_image(b)?);
        let os = g.rel_to_os(gr.shape.target()).ok();
        out.push(OverlayShape {
            kind,
            label: gr.label.unwrap_or_default(),
            x1: a.x,
            y1: a.y,
            x2: b.x,
            y2: b.y,
            screen_x: os.map(|p| p.x),
            screen_y: os.map(|p| p.y),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use screenpilot_agent::{InputSpace, MonitorGeometry, OsPoint};

    #[test]
    fn maps_boxes_and_points() {
        let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 100, y: 0 }, width: 1000, height: 500, scale_factor: 1.0, input_space: InputSpace::Physical };
        let g = CaptureGeometry::full_monitor(m, 1000, 500).unwrap();
        let text = r#"```json
[{"bbox_2d": [100, 200, 300, 400], "label": "OK"}, {"point_2d": [500, 500], "label": "x"}]
```"#;
        let s = shapes(text, &g).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].kind, s[0].x1, s[0].y1, s[0].x2, s[0].y2), ("box", 100.0, 100.0, 300.0, 200.0));
        assert_eq!((s[0].screen_x, s[0].screen_y), (Some(300), Some(150)));
        assert_eq!((s[1].kind, s[1].label.as_str(), s[1].x1), ("point", "x", 500.0));
        assert!(shapes("no boxes here", &g).is_err());
    }
}
