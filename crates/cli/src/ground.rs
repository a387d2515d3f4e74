//! `screenpilot ground`: ask the model where something is and print what it found as JSON, in
//! screen pixels (the image is taken as a capture of a monitor at --origin with --scale).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use screenpilot_agent::coords::{CaptureGeometry, InputSpace, MonitorGeometry, OsPoint};
use screenpilot_agent::grounding::{grounding_prompt, locate};
use screenpilot_engine::ImageSource;
use serde_json::json;

use crate::args::GroundArgs;
use crate::ask::{check_max_tokens, engine_config, options, request, CliTimings};
use crate::backend::{open, Opened};

/// The boxes and points of a model answer in OS input coordinates of the capture's monitor.
fn ground_objects(text: &str, geo: &CaptureGeometry) -> screenpilot_agent::Result<Vec<serde_json::Value>> {
    Ok(locate(text, geo)?
        .into_iter()
        .map(|l| {
            let mut o = json!({"label": l.label, "point": [l.point.x, l.point.y]});
            if let (Some([a, b]), Some(r)) = (l.bbox, l.bbox_rel) {
                o["bbox"] = json!([a.x, a.y, b.x, b.y]);
                o["bbox_rel"] = json!([r.min.x, r.min.y, r.max.x, r.max.y]);
            }
            o
        })
        .collect())
}

pub fn run(a: GroundArgs) -> anyhow::Result<ExitCode> {
    check_max_tokens(a.sampling.max_tokens)?;
    // Decoded here (EXIF orientation applied, as the model sees it): its size maps the answer.
    let img = screenpilot_model::preprocess::load_image(&a.image)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;
    let (w, h) = (img.width(), img.height());
    let opened = open(&a.backend, a.model.as_deref(), &a.runtime, engine_config(0))?;
    let mut sampling = a.sampling.clone();
    // Greedy unless a temperature is given (the repetition penalty still applies).
    sampling.greedy |= sampling.temperature.is_none();
    let options = options(&opened, &sampling)?;
    let req = request(vec![ImageSource::Image(Arc::new(img))], None, &grounding_prompt(&a.query), options);
    let reply = opened.backend().chat(req, &mut |_| {})?;
    let load_ms = match &opened {
        Opened::Local(l) => Some(l.load_ms),
        Opened::Remote(_) => None,
    };
    let monitor = MonitorGeometry {
        name: "capture".into(),
        origin: OsPoint { x: a.origin.0, y: a.origin.1 },
        width: w,
        height: h,
        scale_factor: a.scale,
        input_space: if a.logical { InputSpace::Logical } else { InputSpace::Physical },
    };
    let geo = CaptureGeometry::full_monitor(monitor, w, h).context("screen geometry")?;
    let text = &reply.text;
    let (objects, error) = match ground_objects(text, &geo) {
        Ok(o) => (o, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let out = json!({
        "query": a.query, "image": [w, h], "objects": objects, "model_output": text, "error": error,
        "timings": CliTimings { request: reply.timings, load_ms },
    });
    crate::out_line(&serde_json::to_string_pretty(&out)?)?;
    Ok(if objects.is_empty() { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(origin: (i32, i32), scale: f64, input_space: InputSpace) -> CaptureGeometry {
        let m = MonitorGeometry {
            name: "m".into(),
            origin: OsPoint { x: origin.0, y: origin.1 },
            width: 2560,
            height: 1440,
            scale_factor: scale,
            input_space,
        };
        CaptureGeometry::full_monitor(m, 2560, 1440).unwrap()
    }

    const OUT: &str = "Sure!\n```json\n[{\"bbox_2d\": [100, 200, 300, 400], \"label\": \"OK\"}]\n```";

    #[test]
    fn boxes_map_to_physical_pixels_of_a_monitor_left_of_the_primary() {
        let o = ground_objects(OUT, &geo((-2560, 0), 1.0, InputSpace::Physical)).unwrap();
        assert_eq!(o[0]["bbox"], json!([-2560 + 256, 288, -2560 + 768, 576]));
        assert_eq!(o[0]["point"], json!([-2560 + 512, 432]));
        assert_eq!(o[0]["label"], json!("OK"));
    }

    #[test]
    fn logical_input_space_divides_by_the_scale_factor() {
        let o = ground_objects(OUT, &geo((0, -720), 2.0, InputSpace::Logical)).unwrap();
        assert_eq!(o[0]["point"], json!([256, -720 + 216]));
    }

    #[test]
    fn answers_without_boxes_are_an_error() {
        assert!(ground_objects("I cannot see it.", &geo((0, 0), 1.0, InputSpace::Physical)).is_err());
    }
}
