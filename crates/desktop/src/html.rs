//! Screenshot → HTML: pulls the HTML page out of a model answer, makes it inert (a CSP
//! meta tag allowing no scripts and no network; the UI also shows it in a sandboxed iframe),
//! renders it at the screenshot's size with headless Chromium when one is installed, and
//! scores fidelity as the mean SSIM of downscaled grey images, with a difference image.

use std::path::Path;
use std::process::Command;

use image::{imageops::FilterType, GrayImage, RgbImage};
use serde::Serialize;

use crate::error::{DesktopError, Result};
use crate::session::Session;

/// A generated page, saved, with its fidelity when it could be rendered.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The saved file.
    pub path: String,
    /// The inert HTML.
    pub html: String,
    /// Mean SSIM (0..1) against the capture, if rendered.
    pub score: Option<f64>,
    /// Difference image (PNG), if rendered.
    #[serde(skip)]
    pub diff_png: Option<Vec<u8>>,
    /// Why there is no score.
    pub note: Option<String>,
}

/// Asks the session's model for a page of its capture, saves it in `dir` and scores it.
pub fn generate_page(session: &Session, dir: &Path) -> Result<Page> {
    let shot = session.capture().ok_or(DesktopError::NoCapture)?;
    let answer = session.ask(PROMPT, &mut |_| {})?;
    let html = make_inert(&extract_html(&answer.text).ok_or_else(|| DesktopError::Model("the answer holds no HTML page".into()))?);
    std::fs::create_dir_all(dir).map_err(|e| DesktopError::io(dir, e))?;
    let path = dir.join("page.html");
    std::fs::write(&path, &html).map_err(|e| DesktopError::io(&path, e))?;
    let (w, h) = shot.image.dimensions();
    let (score, diff_png, note) = match render_with_chromium(&path, w, h, &dir.join("page.png")) {
        Ok(rendered) => {
            let (score, diff) = fidelity(&shot.image, &rendered);
            let mut png = std::io::Cursor::new(Vec::new());
            diff.write_to(&mut png, image::ImageFormat::Png).map_err(|e| DesktopError::Model(e.to_string()))?;
            (Some(score), Some(png.into_inner()), None)
        }
        Err(e) => (None, None, Some(e.to_string())),
    };
    Ok(Page { path: path.display().to_string(), html, score, diff_png, note })
}

/// The CSP every generated page carries: inline styles and data: images only.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:";
/// Prompt asking the model for a page.
pub const PROMPT: &str = "Write one self-contained HTML page (inline CSS, no scripts, no external resources) that reproduces this screenshot as closely as possible. Answer with the HTML only, in a ```html block.";

/// The HTML in `answer`: a ```html fenced block, else the `<html>…</html>` span.
pub fn extract_html(answer: &str) -> Option<String> {
    if let Some(i) = answer.find("```html") {
        let body = &answer[i + 7..];
        let end = body.find("```").unwrap_or(body.len());
        return Some(body[..end].trim().to_string()).filter(|s| !s.is_empty());
    }
    let lower = answer.to_ascii_lowercase();
    let start = lower.find("<html").or_else(|| lower.find("<!doctype html"))?;
    let end = lower.rfind("</html>").map_or(answer.len(), |e| e + 7);
    (end > start).then(|| answer[start..end].to_string())
}

/// `html` with the [`PAGE_CSP`] meta tag first thing inside `<head>` (added if missing).
pub fn make_inert(html: &str) -> String {
    let meta = format!("<meta http-equiv=\"Content-Security-Policy\" content=\"{PAGE_CSP}\">");
    let lower = html.to_ascii_lowercase();
    if let Some(h) = lower.find("<head") {
        if let Some(close) = lower[h..].find('>') {
            let at = h + close + 1;
            return format!("{}{meta}{}", &html[..at], &html[at..]);
        }
    }
    format!("<!doctype html><html><head>{meta}</head><body>{html}</body></html>")
}

fn grey(img: &RgbImage, w: u32, h: u32) -> GrayImage {
    image::imageops::grayscale(&image::imageops::resize(img, w, h, FilterType::Triangle))
}

/// Mean SSIM over 8×8 blocks of both images downscaled to at most 256 px wide, in grey,
/// and the absolute difference image at that size.
pub fn fidelity(reference: &RgbImage, rendered: &RgbImage) -> (f64, GrayImage) {
    let (rw, rh) = reference.dimensions();
    let w = rw.clamp(8, 256);
    let h = ((u64::from(rh) * u64::from(w) / u64::from(rw.max(1))) as u32).max(8);
    let (a, b) = (grey(reference, w, h), grey(rendered, w, h));
    let diff = GrayImage::from_fn(w, h, |x, y| image::Luma([a.get_pixel(x, y)[0].abs_diff(b.get_pixel(x, y)[0])]));
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mut sum, mut n) = (0.0, 0u32);
    for by in (0..h - 7).step_by(8) {
        for bx in (0..w - 7).step_by(8) {
            let (mut ma, mut mb, mut va, mut vb, mut cov) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for y in by..by + 8 {
                for x in bx..bx + 8 {
                    ma += f64::from(a.get_pixel(x, y)[0]);
                    mb += f64::from(b.get_pixel(x, y)[0]);
                }
            }
            ma /= 64.0;
            mb /= 64.0;
            for y in by..by + 8 {
                for x in bx..bx + 8 {
                    let (da, db) = (f64::from(a.get_pixel(x, y)[0]) - ma, f64::from(b.get_pixel(x, y)[0]) - mb);
                    va += da * da;
                    vb += db * db;
                    cov += da * db;
                }
            }
            let (va, vb, cov) = (va / 63.0, vb / 63.0, cov / 63.0);
            sum += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            n += 1;
        }
    }
    (if n == 0 { 0.0 } else { sum / f64::from(n) }, diff)
}

/// Renders `html_file` at `width`×`height` with headless Chromium (`chromium` or
/// `google-chrome` on the PATH). Scripts stay off through the page's own CSP (`make_inert`);
/// Chromium's `scriptEnabled=false` setting would also stop it from taking the screenshot.
pub fn render_with_chromium(html_file: &Path, width: u32, height: u32, out_png: &Path) -> Result<RgbImage> {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .ok_or_else(|| DesktopError::InvalidArgument("no headless Chromium installed (apt install chromium) to score fidelity".into()))?;
    let status = Command::new(browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", out_png.display()))
        .arg(format!("file://{}", html_file.display()))
        .output()
        .map_err(|e| DesktopError::io(html_file, e))?;
    if !status.status.success() {
        return Err(DesktopError::InvalidArgument(format!("chromium failed: {}", String::from_utf8_lossy(&status.stderr))));
    }
    let img = image::open(out_png).map_err(|e| DesktopError::InvalidArgument(e.to_string()))?;
    Ok(img.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_fenced_or_bare_html_and_makes_it_inert() {
        assert_eq!(extract_html("x ```html\n<p>a</p>\n``` y").as_deref(), Some("<p>a</p>"));
        assert_eq!(extract_html("ok <HTML><body>b</body></HTML> bye").as_deref(), Some("<HTML><body>b</body></HTML>"));
        assert_eq!(extract_html("no page"), None);
        let page = make_inert("<html><head><title>t</title></head><body></body></html>");
        assert!(page.starts_with("<html><head><meta http-equiv=\"Content-Security-Policy\""), "{page}");
        assert!(make_inert("<p>x</p>").contains("default-src 'none'"));
    }

    #[test]
    fn ssim_is_one_for_equal_images_and_lower_for_different_ones() {
        let a = RgbImage::from_fn(300, 200, |x, y| image::Rgb([(x % 50 * 5) as u8, (y % 40 * 6) as u8, 90]));
        let (same, diff) = fidelity(&a, &a);
        assert!((same - 1.0).abs() < 1e-9, "{same}");
        assert!(diff.pixels().all(|p| p[0] == 0));
        let b = RgbImage::from_pixel(300, 200, image::Rgb([128, 128, 128]));
        let (other, _) = fidelity(&a, &b);
        assert!(other < 0.5, "{other}");
    }
}
