//! Saving a clip: the only time rewind writes to the disk, when the user asks. The frames go
//! into a folder the user picks as `frame_0000.png`, … (the number is the frame's time step,
//! `number / fps` seconds into the clip) beside `clip.json` (`fps`, `indices`), so the folder
//! can be asked about again (`screenpilot ask --frames`) or looked at. A folder that already
//! holds a clip is not overwritten.

use std::path::{Path, PathBuf};

use screenpilot_engine::Clip;

use crate::error::{DesktopError, Result};

/// The record written beside the frames.
pub const CLIP_FILE: &str = "clip.json";

/// Writes `clip` into `dir` (created if missing); returns the files written, frames first.
pub fn save_clip(clip: &Clip, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| DesktopError::io(dir, e))?;
    let record = dir.join(CLIP_FILE);
    if record.exists() {
        return Err(DesktopError::InvalidArgument(format!("{} already holds a clip: pick an empty folder", dir.display())));
    }
    let mut written = Vec::with_capacity(clip.frames.len() + 1);
    for (frame, index) in clip.frames.iter().zip(&clip.indices) {
        let path = dir.join(format!("frame_{index:04}.png"));
        let png = crate::screen::png_bytes(&frame.to_rgb8())?;
        crate::threads::write_atomic(&path, &png)?;
        written.push(path);
    }
    let json = serde_json::json!({ "fps": clip.fps, "indices": clip.indices });
    crate::threads::write_atomic(&record, json.to_string().as_bytes())?;
    written.push(record);
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use image::{DynamicImage, Rgb, RgbImage};
    use std::sync::Arc;

    #[test]
    fn writes_each_frame_and_the_timing_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("sp-rewind-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let frame = |v: u8| Arc::new(DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 4, Rgb([v, 0, 0]))));
        let clip = Clip { frames: vec![frame(1), frame(2)], indices: vec![0, 3], fps: Some(2.0) };
        let files = save_clip(&clip, &dir).unwrap();
        let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["frame_0000.png", "frame_0003.png", "clip.json"]);
        let back = image::open(dir.join("frame_0003.png")).unwrap().to_rgb8();
        assert_eq!(back.get_pixel(0, 0).0, [2, 0, 0]);
        let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(CLIP_FILE)).unwrap()).unwrap();
        assert_eq!(record, serde_json::json!({"fps": 2.0, "indices": [0, 3]}));
        let again = save_clip(&clip, &dir).unwrap_err().to_string();
        assert!(again.contains("already holds a clip"), "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
