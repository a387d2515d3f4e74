//! Model configuration: serde mirrors of Hugging Face `config.json` (transformers 4.57 layout with
//! `rope_scaling` + `rope_theta`, and the 5.x layout with `rope_parameters`), validated into the
//! resolved values the layers use.

use serde::Deserialize;

use crate::error::{ModelError, Result};

fn default_image_token_id() -> u32 {
    151655
}
fn default_video_token_id() -> u32 {
    151656
}
fn default_vision_start_token_id() -> u32 {
    151652
}
fn default_vision_end_token_id() -> u32 {
    151653
}
fn default_true() -> bool {
    true
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    5_000_000.0
}
fn default_mrope_section() -> Vec<usize> {
    vec![24, 20, 20]
}
fn default_silu() -> String {
    "silu".to_string()
}
fn default_gelu_tanh() -> String {
    "gelu_pytorch_tanh".to_string()
}
fn default_in_channels() -> usize {
    3
}
fn default_patch_size() -> usize {
    16
}
fn default_two() -> usize {
    2
}

/// The rope block of either layout (`rope_scaling` in 4.57, `rope_parameters` in 5.x).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RopeParams {
    #[serde(default)]
    pub rope_type: Option<String>,
    #[serde(default, alias = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub mrope_section: Option<Vec<usize>>,
    #[serde(default)]
    pub mrope_interleaved: Option<bool>,
}

/// `text_config` of `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParams>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParams>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
}

/// `vision_config` of `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_two")]
    pub spatial_merge_size: usize,
    #[serde(default = "default_two")]
    pub temporal_patch_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    #[serde(default)]
    pub deepstack_visual_indexes: Vec<usize>,
    #[serde(default = "default_gelu_tanh")]
    pub hidden_act: String,
    #[serde(default)]
    pub rope_parameters: Option<RopeParams>,
}

impl VisionConfig {
    /// Base of the 2-D rotary embedding (10000 unless the config says otherwise).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters.as_ref().and_then(|r| r.rope_theta).unwrap_or(10_000.0)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Side of the learned position-embedding grid (48 for the released models).
    pub fn grid_per_side(&self) -> usize {
        (self.num_position_embeddings as f64).sqrt().round() as usize
    }
    /// Length of one patch vector: channels * temporal * patch * patch (1536 for the released models).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// Top level of `config.json` for `Qwen3VLForConditionalGeneration`.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3VlConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    #[serde(default = "default_image_token_id")]
    pub image_token_id: u32,
    #[serde(default = "default_video_token_id")]
    pub video_token_id: u32,
    #[serde(default = "default_vision_start_token_id")]
    pub vision_start_token_id: u32,
    #[serde(default = "default_vision_end_token_id")]
    pub vision_end_token_id: u32,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

/// Text-decoder values after resolving both config layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct TextParams {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Frequencies given to the (t, h, w) axes; sums to head_dim / 2.
    pub mrope_section: [usize; 3],
    pub max_position_embeddings: usize,
    pub attention_bias: bool,
}

impl Qwen3VlConfig {
    /// Parses `config.json` text and checks that it is a Qwen3-VL dense model we can run.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Qwen3VlConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json is not a Qwen3-VL config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses a config the layers cannot run, naming the field: a zero size, heads that do not
    /// divide, a non-positive epsilon or rope base. Caught here, these would otherwise become a
    /// shape error deep in a layer, a division by zero, or NaN logits.
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        match self.model_type.as_deref() {
            Some("qwen3_vl") => {}
            Some(other) => {
                return bad(format!(
                    "unsupported model_type {other:?}: ScreenPilot runs Qwen3-VL dense models (model_type \"qwen3_vl\")"
                ))
            }
            None => return bad("config.json has no model_type".into()),
        }
        let t = &self.text_config;
        let v = &self.vision_config;
        if t.hidden_act != "silu" {
            return bad(format!("text hidden_act {:?} is not supported (expected silu)", t.hidden_act));
        }
        if !matches!(v.hidden_act.as_str(), "gelu_pytorch_tanh" | "gelu") {
            return bad(format!("vision hidden_act {:?} is not supported", v.hidden_act));
        }
        let sizes = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            ("text_config.num_key_value_heads", t.num_key_value_heads),
            ("text_config.max_position_embeddings", t.max_position_embeddings.unwrap_or(1)),
            ("vision_config.depth", v.depth),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_heads", v.num_heads),
            ("vision_config.in_channels", v.in_channels),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.spatial_merge_size", v.spatial_merge_size),
            ("vision_config.temporal_patch_size", v.temporal_patch_size),
            ("vision_config.out_hidden_size", v.out_hidden_size),
            ("vision_config.num_position_embeddings", v.num_position_embeddings),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return bad(format!("{field} must be at least 1"));
        }
        if t.head_dim == Some(0) {
            return bad("text_config.head_dim must be at least 1".into());
        }
        if t.num_attention_heads % t.num_key_value_heads != 0 {
            return bad(format!(
                "text_config.num_attention_heads ({}) must be a multiple of text_config.num_key_value_heads ({})",
                t.num_attention_heads, t.num_key_value_heads
            ));
        }
        // With an explicit head_dim, Qwen3 projects heads * head_dim back to hidden_size, so only
        // a head_dim derived from hidden_size needs it to divide.
        if t.head_dim.is_none() && t.hidden_size % t.num_attention_heads != 0 {
            return bad(format!(
                "text_config.hidden_size ({}) must be a multiple of text_config.num_attention_heads ({}) \
                 when head_dim is not given",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if !(t.rms_norm_eps > 0.0 && t.rms_norm_eps.is_finite()) {
            return bad(format!("text_config.rms_norm_eps must be > 0, got {}", t.rms_norm_eps));
        }
        if v.hidden_size % v.num_heads != 0 {
            return bad(format!(
                "vision_config.hidden_size ({}) must be a multiple of vision_config.num_heads ({})",
                v.hidden_size, v.num_heads
            ));
        }
        // The 2-D rope gives half of each head to rows and half to columns, in sin/cos pairs.
        if v.head_dim() % 4 != 0 {
            return bad(format!(
                "vision_config.hidden_size / num_heads = {} must be a multiple of 4 (the 2-D rope)",
                v.head_dim()
            ));
        }
        let theta = v.rope_theta();
        if !(theta > 0.0 && theta.is_finite()) {
            return bad(format!("vision_config.rope_parameters.rope_theta must be > 0, got {theta}"));
        }
        let side = v.grid_per_side();
        if side.checked_mul(side) != Some(v.num_position_embeddings) {
            return bad("vision_config.num_position_embeddings must be a perfect square".into());
        }
        let patch = [v.temporal_patch_size, v.patch_size, v.patch_size].iter().try_fold(v.in_channels, |a, &b| a.checked_mul(b));
        if patch.is_none() {
            return bad("vision_config: in_channels * temporal_patch_size * patch_size^2 is too large".into());
        }
        if v.out_hidden_size != t.hidden_size {
            return bad(format!(
                "vision_config.out_hidden_size {} differs from text_config.hidden_size {}",
                v.out_hidden_size, t.hidden_size
            ));
        }
        if v.deepstack_visual_indexes.iter().any(|&i| i >= v.depth) {
            return bad("vision_config.deepstack_visual_indexes must be below the vision depth".into());
        }
        if v.deepstack_visual_indexes.len() > t.num_hidden_layers {
            return bad("vision_config.deepstack_visual_indexes: more DeepStack taps than text layers".into());
        }
        let ids = [
            ("image_token_id", self.image_token_id),
            ("video_token_id", self.video_token_id),
            ("vision_start_token_id", self.vision_start_token_id),
            ("vision_end_token_id", self.vision_end_token_id),
        ];
        if let Some((field, id)) = ids.iter().find(|(_, id)| *id as usize >= t.vocab_size) {
            return bad(format!("{field} {id} is not below text_config.vocab_size {}", t.vocab_size));
        }
        let p = self.text_params()?;
        if p.head_dim % 2 != 0 {
            return bad(format!("text_config.head_dim {} must be even (rope rotates pairs)", p.head_dim));
        }
        if !(p.rope_theta > 0.0 && p.rope_theta.is_finite()) {
            return bad(format!("text_config rope_theta must be > 0, got {}", p.rope_theta));
        }
        if p.mrope_section.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(p.head_dim / 2) {
            return bad(format!(
                "text_config mrope_section {:?} must sum to head_dim/2 = {}",
                p.mrope_section,
                p.head_dim / 2
            ));
        }
        Ok(())
    }

    /// The resolved decoder parameters.
    pub fn text_params(&self) -> Result<TextParams> {
        let t = &self.text_config;
        let rope = t.rope_parameters.as_ref().or(t.rope_scaling.as_ref());
        let rope_theta = rope.and_then(|r| r.rope_theta).or(t.rope_theta).unwrap_or_else(default_rope_theta);
        if let Some(kind) = rope.and_then(|r| r.rope_type.clone().or_else(|| r.kind.clone())) {
            if kind != "default" {
                return Err(ModelError::Config(format!("rope_type {kind:?} is not supported (expected default)")));
            }
        }
        if rope.and_then(|r| r.mrope_interleaved) == Some(false) {
            return Err(ModelError::Config("non-interleaved MRoPE is not Qwen3-VL".into()));
        }
        let sec = rope.and_then(|r| r.mrope_section.clone()).unwrap_or_else(default_mrope_section);
        let mrope_section: [usize; 3] = sec
            .as_slice()
            .try_into()
            .map_err(|_| ModelError::Config(format!("mrope_section must have 3 entries, got {sec:?}")))?;
        let head_dim = t.head_dim.unwrap_or(t.hidden_size / t.num_attention_heads.max(1));
        Ok(TextParams {
            vocab_size: t.vocab_size,
            hidden_size: t.hidden_size,
            intermediate_size: t.intermediate_size,
            num_layers: t.num_hidden_layers,
            num_heads: t.num_attention_heads,
            num_kv_heads: t.num_key_value_heads,
            head_dim,
            rms_norm_eps: t.rms_norm_eps,
            rope_theta,
            mrope_section,
            max_position_embeddings: t.max_position_embeddings.unwrap_or(262_144),
            attention_bias: t.attention_bias,
        })
    }

    /// Whether lm_head shares the embedding matrix.
    pub fn tied_embeddings(&self) -> bool {
        self.text_config.tie_word_embeddings.unwrap_or(self.tie_word_embeddings)
    }
}

/// The published 2B/4B/8B shapes, for `bench --shape` and for tests of the loader.
pub fn named_shape(name: &str) -> Option<Qwen3VlConfig> {
    let (hidden, inter, layers, heads, vdepth, vhidden, vinter, vheads, taps): (usize, usize, usize, usize, usize, usize, usize, usize, [usize; 3]) =
        match name {
            "2b" => (2048, 6144, 28, 16, 24, 1024, 4096, 16, [5, 11, 17]),
            "4b" => (2560, 9728, 36, 32, 24, 1024, 4096, 16, [5, 11, 17]),
            "8b" => (4096, 12288, 36, 32, 27, 1152, 4304, 16, [8, 16, 24]),
            _ => return None,
        };
    let json = serde_json::json!({
        "model_type": "qwen3_vl",
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "tie_word_embeddings": name == "2b" || name == "4b",
        "text_config": {
            "model_type": "qwen3_vl_text", "vocab_size": 151936, "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 262144, "hidden_act": "silu", "attention_bias": false,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                "mrope_section": [24, 20, 20], "mrope_interleaved": true}
        },
        "vision_config": {
            "model_type": "qwen3_vl", "depth": vdepth, "hidden_size": vhidden, "intermediate_size": vinter,
            "num_heads": vheads, "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "out_hidden_size": hidden, "num_position_embeddings": 2304,
            "deepstack_visual_indexes": taps, "hidden_act": "gelu_pytorch_tanh"
        }
    });
    serde_json::from_value(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V457: &str = r#"{"model_type":"qwen3_vl","text_config":{"vocab_size":151936,"hidden_size":2048,
      "intermediate_size":6144,"num_hidden_layers":28,"num_attention_heads":16,"num_key_value_heads":8,
      "head_dim":128,"rope_theta":5000000,"rope_scaling":{"mrope_interleaved":true,"mrope_section":[24,20,20],
      "rope_type":"default"}},"vision_config":{"depth":24,"hidden_size":1024,"intermediate_size":4096,
      "num_heads":16,"out_hidden_size":2048,"num_position_embeddings":2304,"deepstack_visual_indexes":[5,11,17]}}"#;

    #[test]
    fn both_rope_layouts_resolve_to_the_same_params() {
        let old = Qwen3VlConfig::from_json(V457).unwrap();
        let new = named_shape("2b").unwrap();
        assert_eq!(old.text_params().unwrap(), new.text_params().unwrap());
        assert_eq!(new.text_params().unwrap().rope_theta, 5_000_000.0);
    }

    #[test]
    fn unknown_model_type_is_refused_with_its_name() {
        let text = V457.replace("\"qwen3_vl\"", "\"llava\"");
        let err = Qwen3VlConfig::from_json(&text).unwrap_err().to_string();
        assert!(err.contains("llava"), "{err}");
    }

    #[test]
    fn bad_mrope_section_is_refused() {
        let text = V457.replace("[24,20,20]", "[24,20,10]");
        assert!(Qwen3VlConfig::from_json(&text).is_err());
    }

    #[test]
    fn named_shapes_are_valid() {
        for s in ["2b", "4b", "8b"] {
            let c = named_shape(s).unwrap();
            c.validate().unwrap();
        }
        assert!(named_shape("3b").is_none());
    }
}
