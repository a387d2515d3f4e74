//! Parser for Qwen3-VL grounding output: lists of `{"bbox_2d": [x1, y1, x2, y2], "label": ...}`
//! and `{"point_2d": [x, y], "label": ...}` objects, fenced or bare, with text around them.
//! Coordinates are relative (0..=1000, x first). Never panics.

use serde::Serialize;
use serde_json::Value;

use crate::coords::{CaptureGeometry, OsPoint, Point, Rect, Rel1000};
use crate::error::{AgentError, Result};
use crate::json_extract::{check_len, extract_json_values};
use crate::reasoning::answer_only;
use crate::model_action::rel_numbers;

/// What was grounded: a box or a point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Shape {
    /// `bbox_2d`, corners normalised so that `min` is the top-left.
    Box(Rect<Rel1000>),
    /// `point_2d`.
    Point(Point<Rel1000>),
}

impl Shape {
    /// The point to click for this shape (a box's centre).
    pub fn target(&self) -> Point<Rel1000> {
        match self {
            Shape::Box(r) => r.center(),
            Shape::Point(p) => *p,
        }
    }
}

/// One grounded object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grounding {
    /// Where it is.
    pub shape: Shape,
    /// The label the model gave, in whatever language (non-string labels are stringified).
    pub label: Option<String>,
}

/// All groundings in a model response's answer (a Thinking model's reasoning is skipped:
/// [`answer_only`]). No grounding at all is [`AgentError::NotFound`]; a `bbox_2d`/`point_2d`
/// of the wrong shape or range is an error, not silently dropped.
pub fn parse_grounding(text: &str) -> Result<Vec<Grounding>> {
    check_len(text)?;
    let text = answer_only(text);
    let mut out = Vec::new();
    for value in extract_json_values(text) {
        collect(&value, &mut out, 0)?;
    }
    if out.is_empty() {
        return Err(AgentError::NotFound { expected: "bbox_2d or point_2d" });
    }
    Ok(out)
}

/// The grounding request in Qwen3-VL's relative-coordinate JSON format (`ground`, the MCP
/// server's `find`).
pub fn grounding_prompt(query: &str) -> String {
    format!(
        "{query}\nReport every match as JSON: a list of {{\"bbox_2d\": [x1, y1, x2, y2], \"label\": \"...\"}} \
         with coordinates relative to the image on a 0-1000 scale."
    )
}

/// A grounded object in OS input coordinates of the capture's monitor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Located {
    /// The model's label.
    pub label: Option<String>,
    /// Where to click (a box's centre).
    pub point: OsPoint,
    /// The box's corners (top-left, bottom-right); None for a point.
    pub bbox: Option<[OsPoint; 2]>,
    /// The box as the model wrote it (0..=1000); None for a point.
    pub bbox_rel: Option<Rect<Rel1000>>,
}

/// Every box and point of a model answer, mapped onto the screen through `geo`; an error when
/// there is none or one lies off the capture's monitor.
pub fn locate(text: &str, geo: &CaptureGeometry) -> Result<Vec<Located>> {
    parse_grounding(text)?
        .into_iter()
        .map(|g| {
            let point = geo.rel_to_os(g.shape.target())?;
            let (bbox, bbox_rel) = match &g.shape {
                Shape::Box(r) => (Some([geo.rel_to_os(r.min)?, geo.rel_to_os(r.max)?]), Some(*r)),
                Shape::Point(_) => (None, None),
            };
            Ok(Located { label: g.label, point, bbox, bbox_rel })
        })
        .collect()
}

fn collect(value: &Value, out: &mut Vec<Grounding>, depth: usize) -> Result<()> {
    match value {
        Value::Array(items) if depth < 4 => {
            for item in items {
                collect(item, out, depth + 1)?;
            }
        }
        Value::Object(obj) => {
            let label = obj.get("label").map(|l| match l {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            if let Some(b) = obj.get("bbox_2d") {
                let n = rel_numbers(b, 4, "bbox_2d")?;
                let rect = Rect::from_corners(Point::new(n[0], n[1]), Point::new(n[2], n[3]));
                out.push(Grounding { shape: Shape::Box(rect), label });
            } else if let Some(p) = obj.get("point_2d") {
                let n = rel_numbers(p, 2, "point_2d")?;
                out.push(Grounding { shape: Shape::Point(Point::new(n[0], n[1])), label });
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fenced_bbox_list_with_unicode_labels_and_trailing_comma() {
        let t = "Here:\n```json\n[\n {\"bbox_2d\": [10, 20, 110, 220], \"label\": \"OK button\"},\n {\"bbox_2d\": [500, 500, 400, 450], \"label\": \"確定ボタン\"},\n]\n```";
        let g = parse_grounding(t).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].label.as_deref(), Some("OK button"));
        assert_eq!(g[0].shape.target(), Point::new(60.0, 120.0));
        assert_eq!(g[1].label.as_deref(), Some("確定ボタン"));
        assert_eq!(g[1].shape, Shape::Box(Rect::from_corners(Point::new(400.0, 450.0), Point::new(500.0, 500.0))));
    }

    #[test]
    fn a_point_in_a_thinking_models_reasoning_is_not_a_grounding() {
        let t = "Not {\"point_2d\": [10, 10]} but lower.\n</think>\n\n{\"point_2d\": [500, 900]}";
        assert_eq!(parse_grounding(t).unwrap(), vec![Grounding { shape: Shape::Point(Point::new(500.0, 900.0)), label: None }]);
        assert!(matches!(parse_grounding("<think>\n{\"point_2d\": [10, 10]}"), Err(AgentError::NotFound { .. })));
    }

    #[test]
    fn parses_bare_point_object_inside_prose() {
        let g = parse_grounding(r#"The icon is at {"point_2d": [123, 456], "label": "Einstellungen"} I think."#).unwrap();
        assert_eq!(g, vec![Grounding { shape: Shape::Point(Point::new(123.0, 456.0)), label: Some("Einstellungen".into()) }]);
    }

    #[test]
    fn wrong_arity_or_range_is_an_error_and_nothing_is_not_found() {
        assert!(matches!(parse_grounding(r#"[{"bbox_2d": [1, 2, 3]}]"#), Err(AgentError::Malformed(_))));
        assert!(matches!(parse_grounding(r#"{"point_2d": [1001, 2]}"#), Err(AgentError::RelativeOutOfRange(_))));
        assert!(matches!(parse_grounding("no json here"), Err(AgentError::NotFound { .. })));
    }
}
