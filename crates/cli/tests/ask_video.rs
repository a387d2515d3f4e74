//! `screenpilot ask --frames DIR` and `--video FILE` end to end on the tiny model: a folder of
//! frames gives transformers' tokens (the video fixture of tools/make_video_fixtures.py), a video
//! file samples and times its frames as its container says (the same prompt as its frames given
//! as a folder at its frame rate), and bad input is one clear error line.

use std::process::Output;

#[path = "support/cli.rs"]
mod cli;
use cli::{ask, assert_one_clear_error, root};


fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn ids(v: &serde_json::Value, key: &str) -> Vec<u64> {
    v[key].as_array().unwrap().iter().map(|s| s.as_u64().unwrap_or_else(|| s["id"].as_u64().unwrap())).collect()
}

fn path(rel: &str) -> String {
    root().join(rel).to_string_lossy().into_owned()
}

#[test]
fn a_folder_of_frames_gives_transformers_tokens() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/reference/video_cases.json")).unwrap(),
    )
    .unwrap();
    let case = &meta["cases"]["video_odd"];
    let q = case["text"].as_str().unwrap();
    let v = json_of(&ask(&["--frames", &path("tests/fixtures/video/odd"), "--fps", "2", "--max-tokens", "12", "--json", q]));
    let want: Vec<u64> = case["generated_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids(&v, "steps"), want);
}

#[test]
fn a_video_file_is_sampled_and_timed_as_its_frames_at_its_frame_rate() {
    // h264.mp4: 15 frames of 64x48 at 5 fps. The same count of frames of that size at 5 fps,
    // as a folder, must give the same prompt ids (frame indices, timestamps, token counts).
    let dir = std::env::temp_dir().join(format!("screenpilot-ask-frames-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..15 {
        std::fs::write(dir.join(format!("f{i:02}.png")), png_64x48(i as u8)).unwrap();
    }
    let q = "What happens?";
    let video = json_of(&ask(&["--video", &path("tests/fixtures/video_files/h264.mp4"), "--max-tokens", "2", "--json", q]));
    let frames = json_of(&ask(&["--frames", dir.to_str().unwrap(), "--fps", "5", "--max-tokens", "2", "--json", q]));
    std::fs::remove_dir_all(&dir).ok();
    let prompt = ids(&video, "prompt_token_ids");
    assert_eq!(prompt, ids(&frames, "prompt_token_ids"));
    // At 2 fps the default processor samples 6 of the 15 frames: 3 temporal patches, each with
    // its timestamp; some <|video_pad|> (151656) tokens.
    assert!(prompt.iter().filter(|&&t| t == 151656).count() >= 3, "{prompt:?}");
}


#[test]
fn bad_videos_and_folders_are_one_clear_error() {
    assert_one_clear_error(&ask(&["--video", "/no/such.mp4", "hi"]), "/no/such.mp4");
    let png = path("tests/fixtures/images/a_120x90.png");
    assert_one_clear_error(&ask(&["--video", &png, "hi"]), "not a video in a supported container");
    assert_one_clear_error(&ask(&["--frames", "/no/such/dir", "hi"]), "cannot read the folder /no/such/dir");
    let empty = std::env::temp_dir().join(format!("screenpilot-ask-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert_one_clear_error(&ask(&["--frames", empty.to_str().unwrap(), "hi"]), "no image files");
    let odd = path("tests/fixtures/video/odd");
    assert_one_clear_error(&ask(&["--frames", &odd, "--fps", "0", "hi"]), "--fps must be a positive number");
    std::fs::remove_dir_all(&empty).ok();
}

/// A 64x48 grey PNG.
fn png_64x48(level: u8) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(64, 48, image::Rgb([level; 3]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
