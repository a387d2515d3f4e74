//! The host-memory guard: on the CPU a failed allocation ends the process (Rust aborts), so a
//! request whose vision tower or prefill would need more memory than the machine has must be
//! refused before it runs, with a message that says what it needs and what is there. (On a GPU
//! an allocation that fails is an error the engine returns; no guard is needed there.)
//!
//! The estimate follows the CPU code path: attention materialises the scores of every head
//! (query rows x key rows, f32 for the softmax, plus the scaled copy and the probabilities) one
//! image at a time in the vision tower and for all new prompt rows in the prefill, next to the
//! activations of one layer. It is deliberately an upper bound of the same order, not exact.

use screenpilot_model::Qwen3VlConfig;

use crate::error::{EngineError, Result};

/// Peak bytes, roughly, of encoding images of `patches` patches each and then prefilling
/// `new_tokens` prompt tokens after `cached_tokens` cached ones, with values of `dtype_bytes`.
pub fn estimate_peak_bytes(
    cfg: &Qwen3VlConfig,
    patches: &[usize],
    new_tokens: usize,
    cached_tokens: usize,
    dtype_bytes: usize,
) -> u64 {
    let v = &cfg.vision_config;
    let t = &cfg.text_config;
    let (s, f32b) = (dtype_bytes as u64, 4u64);
    let all_patches: u64 = patches.iter().map(|&p| p as u64).sum();
    let largest = patches.iter().copied().max().unwrap_or(0) as u64;
    // Scores, their scaled copy and the f32 probabilities of the largest image's attention.
    let vision_scores = v.num_heads as u64 * largest * largest * (2 * s + f32b);
    // One layer's activations over every patch (qkv, MLP) and the DeepStack outputs kept.
    let vision_acts = all_patches * (4 * v.hidden_size as u64 + 2 * v.intermediate_size as u64) * s
        + all_patches * v.out_hidden_size as u64 * s * (1 + v.deepstack_visual_indexes.len() as u64);
    let n = new_tokens as u64;
    let keys = n + cached_tokens as u64;
    let text_scores = t.num_attention_heads as u64 * n * keys * (2 * s + f32b);
    let text_acts = n * (6 * t.hidden_size as u64 + 3 * t.intermediate_size as u64) * s;
    vision_scores.max(text_scores) + vision_acts + text_acts
}

/// Memory the kernel says is available (`MemAvailable` in /proc/meminfo), in bytes; None where
/// it cannot be read (not Linux).
pub fn available_host_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a request whose estimate is over `budget` bytes.
pub fn check(needed: u64, budget: u64) -> Result<()> {
    if needed <= budget {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(EngineError::InvalidRequest(format!(
        "this request needs about {:.1} GiB of memory to compute on the CPU and {:.1} GiB is available: \
         send smaller images, fewer images or a shorter prompt (or lower the image-token cap)",
        gib(needed),
        gib(budget)
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tiny() -> Qwen3VlConfig {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/config.json");
        Qwen3VlConfig::from_json(&std::fs::read_to_string(dir).unwrap()).unwrap()
    }

    #[test]
    fn the_estimate_grows_with_the_square_of_the_largest_image() {
        let cfg = tiny();
        let small = estimate_peak_bytes(&cfg, &[1024], 300, 0, 4);
        let big = estimate_peak_bytes(&cfg, &[65536], 16400, 0, 4);
        // 2 heads x 65536^2 x 12 bytes ~ 103 GB: far beyond any test machine.
        assert!(big > 100_000_000_000, "{big}");
        assert!(small < 64 << 20, "{small}");
        assert!(estimate_peak_bytes(&cfg, &[1024, 1024], 600, 0, 4) < 2 * small);
    }

    #[test]
    fn a_request_over_the_budget_is_refused_with_both_numbers() {
        assert!(check(10, 10).is_ok());
        let err = check(3 << 30, 1 << 30).unwrap_err().to_string();
        assert!(err.contains("3.0 GiB") && err.contains("1.0 GiB"), "{err}");
    }
}
