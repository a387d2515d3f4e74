//! Context budget: which earlier screenshots stay in the conversation. The newest
//! screenshots are kept while their estimated token count fits the budget (and at most
//! `max_images`); older ones are replaced by a short text note. The newest one is always kept.

use crate::brain::{Content, Turn};

/// Limits on screenshots in the model context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextBudget {
    /// Images are assumed to be downscaled to at most this many pixels before tokenising.
    pub max_pixels: u64,
    /// Token budget for all screenshots together.
    pub image_tokens: u64,
    /// Keep at most this many screenshots.
    pub max_images: usize,
}

impl Default for ContextBudget {
    fn default() -> Self {
        Self { max_pixels: 1280 * 32 * 32, image_tokens: 4 * 1280, max_images: 3 }
    }
}

/// Text that replaces a dropped screenshot.
pub const OMITTED_SCREENSHOT: &str = "[earlier screenshot omitted]";

/// Estimated tokens of a `w`x`h` image: cap the area at `max_pixels` (keeping the aspect
/// ratio), then one token per 32x32 patch: `(w/32) * (h/32)`, each factor at least 1.
pub fn estimate_image_tokens(w: u32, h: u32, max_pixels: u64) -> u64 {
    let (mut w, mut h) = (f64::from(w), f64::from(h));
    let area = w * h;
    if area > max_pixels as f64 && area > 0.0 {
        let s = (max_pixels as f64 / area).sqrt();
        w *= s;
        h *= s;
    }
    let patches = |v: f64| ((v / 32.0).floor() as u64).max(1);
    patches(w) * patches(h)
}

/// A copy of `turns` with screenshots beyond the budget replaced by [`OMITTED_SCREENSHOT`].
pub fn apply_budget(turns: &[Turn], budget: &ContextBudget) -> Vec<Turn> {
    let mut out: Vec<Turn> = turns.to_vec();
    let (mut kept, mut used, mut full) = (0usize, 0u64, false);
    for turn in out.iter_mut().rev() {
        for item in turn.content.iter_mut().rev() {
            let Content::Image(img) = item else { continue };
            let cost = estimate_image_tokens(img.width(), img.height(), budget.max_pixels);
            let fits = kept < budget.max_images && used + cost <= budget.image_tokens;
            if !full && (kept == 0 || fits) {
                kept += 1;
                used += cost;
            } else {
                full = true;
                *item = Content::Text(OMITTED_SCREENSHOT.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use image::RgbImage;

    use super::*;
    use crate::brain::Role;

    fn shot(w: u32, h: u32) -> Turn {
        Turn { role: Role::User, content: vec![Content::Image(Arc::new(RgbImage::new(w, h)))] }
    }

    fn image_sizes(turns: &[Turn]) -> Vec<Option<u32>> {
        turns.iter().map(|t| t.images().next().map(|i| i.width())).collect()
    }

    #[test]
    fn estimate_uses_32px_patches_after_capping() {
        assert_eq!(estimate_image_tokens(320, 640, u64::MAX), 10 * 20);
        assert_eq!(estimate_image_tokens(1280, 1280, 640 * 640), 20 * 20);
        assert_eq!(estimate_image_tokens(5, 5, 1_000_000), 1);
    }

    #[test]
    fn keeps_newest_screenshots_that_fit_and_drops_older_ones() {
        let turns = vec![shot(640, 640), shot(641, 640), shot(642, 640), shot(643, 640)];
        let budget = ContextBudget { max_pixels: u64::MAX, image_tokens: 2 * 400, max_images: 10 };
        let kept = apply_budget(&turns, &budget);
        assert_eq!(image_sizes(&kept), vec![None, None, Some(642), Some(643)]);
        assert!(matches!(&kept[0].content[0], Content::Text(t) if t == OMITTED_SCREENSHOT));
    }

    #[test]
    fn image_count_limit_applies_and_newest_is_kept_even_if_too_big() {
        let turns = vec![shot(64, 64), shot(64, 64), shot(64, 64)];
        let count = ContextBudget { max_pixels: u64::MAX, image_tokens: 1000, max_images: 1 };
        assert_eq!(image_sizes(&apply_budget(&turns, &count)), vec![None, None, Some(64)]);
        let tiny = ContextBudget { max_pixels: u64::MAX, image_tokens: 1, max_images: 5 };
        assert_eq!(image_sizes(&apply_budget(&turns, &tiny)), vec![None, None, Some(64)]);
    }
}
