//! 3-D (t, h, w) position ids of a prompt, as transformers' `get_rope_index` computes them:
//! text runs count up on all three axes; each image's tokens get (t, row, col) offsets from the
//! position where the image starts, and the text after it resumes at start + max(rows, cols).
//! A video's temporal patches are separated by their timestamps in the text, so each is placed
//! like an image of its own (t = 1): a grid with `t` temporal patches stands for `t` runs.

use crate::error::{ModelError, Result};
use crate::preprocess::GridThw;

/// Positions of a run of tokens on the three MRoPE axes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Positions {
    pub axes: [Vec<i64>; 3],
}

impl Positions {
    pub fn len(&self) -> usize {
        self.axes[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.axes[0].is_empty()
    }

    /// `n` text positions starting at `start` (the same on all axes): decode steps.
    pub fn text(start: i64, n: usize) -> Self {
        let v: Vec<i64> = (0..n as i64).map(|i| start + i).collect();
        Self { axes: [v.clone(), v.clone(), v] }
    }

    /// The positions of tokens `from..` (the part of a prompt not covered by a cached prefix).
    pub fn tail(&self, from: usize) -> Self {
        Self { axes: self.axes.clone().map(|a| a[from.min(a.len())..].to_vec()) }
    }

    fn push(&mut self, t: i64, h: i64, w: i64) {
        self.axes[0].push(t);
        self.axes[1].push(h);
        self.axes[2].push(w);
    }
}

/// Computes the prompt's 3-D positions and the rope delta (max position + 1 - length), which
/// decoding adds to the token index. `grids` are the images and videos in prompt order; every
/// run of consecutive ids equal to one of `visual_tokens` (the image and the video pad) is an
/// image or one temporal patch of a video, and must have grid.h*w/merge^2 tokens.
pub fn get_rope_index(ids: &[u32], visual_tokens: &[u32], grids: &[GridThw], merge: usize) -> Result<(Positions, i64)> {
    let mut pos = Positions::default();
    let runs: Vec<GridThw> =
        grids.iter().flat_map(|g| std::iter::repeat_n(GridThw { t: 1, ..*g }, g.t.max(1))).collect();
    let mut images = runs.iter();
    let mut current: i64 = 0;
    let mut i = 0;
    while i < ids.len() {
        if !visual_tokens.contains(&ids[i]) {
            pos.push(current, current, current);
            current += 1;
            i += 1;
            continue;
        }
        let run = ids[i..].iter().take_while(|&&t| t == ids[i]).count();
        let g = images
            .next()
            .ok_or_else(|| ModelError::Input("the prompt has more images than were given".into()))?;
        let (gt, gh, gw) = (g.t, g.h / merge, g.w / merge);
        if run != gt * gh * gw {
            return Err(ModelError::Input(format!(
                "an image in the prompt has {run} tokens but its grid needs {}",
                gt * gh * gw
            )));
        }
        for t in 0..gt as i64 {
            for h in 0..gh as i64 {
                for w in 0..gw as i64 {
                    pos.push(current + t, current + h, current + w);
                }
            }
        }
        current += gh.max(gw) as i64;
        i += run;
    }
    if images.next().is_some() {
        return Err(ModelError::Input("more images were given than the prompt has".into()));
    }
    let max = pos.axes.iter().flat_map(|a| a.iter()).copied().max().unwrap_or(-1);
    let delta = max + 1 - ids.len() as i64;
    Ok((pos, delta))
}

#[cfg(test)]
mod tests {
    use super::*;
    const IMG: u32 = 9;

    #[test]
    fn text_only_counts_up_with_zero_delta() {
        let (p, d) = get_rope_index(&[1, 2, 3], &[IMG], &[], 2).unwrap();
        assert_eq!(p, Positions::text(0, 3));
        assert_eq!(d, 0);
    }

    #[test]
    fn image_gets_row_col_offsets_and_text_resumes_after_longest_side() {
        // 2 text, image of 2x3 merged tokens (grid 4x6 patches), 1 text.
        let mut ids = vec![1, 2];
        ids.extend([IMG; 6]);
        ids.push(3);
        let g = GridThw { t: 1, h: 4, w: 6 };
        let (p, d) = get_rope_index(&ids, &[IMG], &[g], 2).unwrap();
        assert_eq!(p.axes[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(p.axes[1], vec![0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(p.axes[2], vec![0, 1, 2, 3, 4, 2, 3, 4, 5]);
        assert_eq!(d, 6 - 9);
    }

    #[test]
    fn token_count_must_match_grid() {
        let ids = [1, IMG, IMG, 2];
        assert!(get_rope_index(&ids, &[IMG], &[GridThw { t: 1, h: 4, w: 4 }], 2).is_err());
        assert!(get_rope_index(&ids, &[IMG], &[], 2).is_err());
    }

    #[test]
    fn each_temporal_patch_of_a_video_is_placed_like_an_image() {
        const VID: u32 = 8;
        // "<t0>" text, patch of 1x2 tokens, "<t1>" text, patch, end.
        let ids = [5, VID, VID, 6, VID, VID, 7];
        let (p, _) = get_rope_index(&ids, &[IMG, VID], &[GridThw { t: 2, h: 2, w: 4 }], 2).unwrap();
        assert_eq!(p.axes[0], vec![0, 1, 1, 3, 4, 4, 6]);
        assert_eq!(p.axes[2], vec![0, 1, 2, 3, 4, 5, 6]);
    }
}
