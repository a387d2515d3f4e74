//! The model's tokenizer (tokenizer.json) with the special tokens Qwen3-VL needs, and a streaming
//! decoder that only releases text once it is complete UTF-8.

use std::path::Path;

use crate::error::{ModelError, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    end_ids: Vec<u32>,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let mut end_ids = Vec::new();
        for t in ["<|im_end|>", "<|endoftext|>"] {
            match inner.token_to_id(t) {
                Some(id) => end_ids.push(id),
                None => return Err(ModelError::Tokenizer(format!("{} has no {t} token", path.display()))),
            }
        }
        Ok(Self { inner, end_ids })
    }

    /// Adds end-of-answer ids (e.g. from generation_config.json).
    pub fn add_end_ids(&mut self, ids: &[u32]) {
        for &i in ids {
            if !self.end_ids.contains(&i) {
                self.end_ids.push(i);
            }
        }
    }

    pub fn is_end(&self, id: u32) -> bool {
        self.end_ids.contains(&id)
    }

    /// Token ids of a rendered prompt; special tokens written in the text are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Turns a stream of ids into text pieces; a multi-byte character split across tokens is held
/// back until it is complete.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl StreamDecoder {
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
