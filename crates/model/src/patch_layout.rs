//! The order of the vision tower's input rows: which patch of the image is row `i`.
//!
//! An image of `h x w` patches is cut into windows of `merge x merge` patches (the patches the
//! vision tower's merger later folds into one LLM token). Rows run over the windows row-major
//! (window row, then window column), and inside a window row-major again (patch row, then patch
//! column). For a grid 4 patches high and 6 wide with 2 x 2 windows the first rows are the
//! patches (0,0) (0,1) (1,0) (1,1), then (0,2) (0,3) (1,2) (1,3), ...: HF's `pixel_values` order.
//!
//! Everything that lays out or reads rows in this order follows this module:
//! `PreprocessedImage::pixels` (host rows, [`patch_at`]), `vision::input` (the same rows cut by a
//! tensor permute, [`window_view`] and [`ROWS_FROM_WINDOW_VIEW`]) and the CUDA kernel
//! `sp_patch_rows_bf16` in `kernels/patch.cu`; the vision tower's position embeddings and rotary
//! tables are built per row by [`merge_order`] (`vision/grid.rs`).

/// `(patch row, patch column)` of row `index` of a grid `w` patches wide, in `m x m` windows
/// (`m` = 0 is taken as 1).
pub fn patch_at(index: usize, w: usize, m: usize) -> (usize, usize) {
    let m = m.max(1);
    let (window, inner) = (index / (m * m), index % (m * m));
    let windows_per_row = (w / m).max(1);
    ((window / windows_per_row) * m + inner / m, (window % windows_per_row) * m + inner % m)
}

/// `(patch row, patch column)` of every row of an `h x w` grid in `m x m` windows, in row
/// order: [`patch_at`] of `0..h*w` (sides not a multiple of `m` drop the partial windows).
pub fn merge_order(h: usize, w: usize, m: usize) -> impl Iterator<Item = (usize, usize)> {
    let m = m.max(1);
    (0..(h / m) * (w / m) * m * m).map(move |i| patch_at(i, w, m))
}

/// Shape in which to view an image of `(gh p, gw p, c)` values (row-major, `gh x gw` patches
/// of `p x p` pixels, `c` channels) so its axes name the window, the patch inside the window
/// and the pixel inside the patch: `(gh/m, m, p, gw/m, m, p, c)` = (window row, patch row in the
/// window, pixel row, window column, patch column in the window, pixel column, channel).
pub fn window_view(gh: usize, gw: usize, p: usize, m: usize, c: usize) -> [usize; 7] {
    let m = m.max(1);
    [gh / m, m, p, gw / m, m, p, c]
}

/// The permutation of [`window_view`]'s axes that lists the patches in row order, each patch
/// channel by channel: `(window row, window column, patch row, patch column, channel, pixel row,
/// pixel column)`. Made contiguous and reshaped to `(gh gw, c p p)`, row `i` is the patch
/// [`patch_at`]`(i, gw, m)`.
pub const ROWS_FROM_WINDOW_VIEW: [usize; 7] = [0, 3, 1, 4, 6, 2, 5];

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The order spelled out: windows row-major, patches row-major inside each window.
    fn brute_force(h: usize, w: usize, m: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for wr in 0..h / m {
            for wc in 0..w / m {
                for r in 0..m {
                    for c in 0..m {
                        out.push((wr * m + r, wc * m + c));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn rows_are_windows_row_major_then_patches_row_major() {
        for (h, w, m) in [(4, 6, 2), (2, 2, 2), (6, 4, 2), (9, 6, 3), (3, 5, 1), (8, 8, 4), (2, 34, 2)] {
            let want = brute_force(h, w, m);
            assert_eq!(merge_order(h, w, m).collect::<Vec<_>>(), want, "{h}x{w} m={m}");
            for (i, &rc) in want.iter().enumerate() {
                assert_eq!(patch_at(i, w, m), rc, "{h}x{w} m={m} row {i}");
            }
        }
        let first: Vec<_> = merge_order(4, 6, 2).take(8).collect();
        assert_eq!(first, [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]);
    }

    #[test]
    fn the_tensor_permute_cuts_the_same_rows() {
        use candle_core::{Device, Tensor};
        for (gh, gw, p, m, c) in [(4, 6, 2, 2, 3), (6, 3, 3, 3, 2), (2, 2, 4, 1, 3)] {
            // Each value is its own index in the (gh p, gw p, c) image.
            let (height, width) = (gh * p, gw * p);
            let n = (height * width * c) as u32;
            let img = Tensor::arange(0u32, n, &Device::Cpu).unwrap();
            let rows = img
                .reshape(window_view(gh, gw, p, m, c).to_vec())
                .and_then(|t| t.permute(ROWS_FROM_WINDOW_VIEW.to_vec()))
                .and_then(|t| t.contiguous())
                .and_then(|t| t.reshape((gh * gw, c * p * p)))
                .and_then(|t| t.to_vec2::<u32>())
                .unwrap();
            for (i, row) in rows.iter().enumerate() {
                let (pr, pc) = patch_at(i, gw, m);
                let mut want = Vec::with_capacity(c * p * p);
                for ch in 0..c {
                    for y in 0..p {
                        for x in 0..p {
                            want.push((((pr * p + y) * width + pc * p + x) * c + ch) as u32);
                        }
                    }
                }
                assert_eq!(row, &want, "grid {gh}x{gw} p={p} m={m}: row {i}");
            }
        }
    }
}
