//! Fuzz target: the model-output parsers must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use screenpilot_agent::coords::{CaptureGeometry, InputSpace, MonitorGeometry, OsPoint};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = screenpilot_agent::parse_grounding(&text);
    if let Ok(actions) = screenpilot_agent::parse_tool_calls(&text) {
        let monitor = MonitorGeometry {
            name: "fuzz".into(),
            origin: OsPoint { x: -1920, y: -40 },
            width: 1920,
            height: 1080,
            scale_factor: 1.5,
            input_space: InputSpace::Physical,
        };
        if let Ok(g) = CaptureGeometry::full_monitor(monitor, 1280, 720) {
            for a in &actions {
                let _ = screenpilot_agent::resolve(a, &g);
            }
        }
    }
});
