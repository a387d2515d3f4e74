//! The model's tokenizer (tokenizer.json) with the special tokens Qwen3-VL needs, and a streaming
//! decoder that only releases text once it is complete UTF-8.
//!
//! Chat prompts are encoded from [`Segment`]s: the template's control tokens are placed by id,
//! and message text is matched only against the added tokens its segment allows, so that
//! `<|im_start|>` typed by a user is encoded as the characters it is made of. For a prompt
//! whose text holds no added-token strings the ids are exactly those of encoding the rendered
//! string (what transformers does): the text between two added tokens is encoded as one piece
//! either way.

use std::path::Path;

use tokenizers::{Model, Normalizer, OffsetType, PreTokenizedString, PreTokenizer};

use crate::chat_template::{render_segments_for, ChatFormat};
use crate::error::{ModelError, Result};
use crate::prompt::{AddedTokens, Message, Segment};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    end_ids: Vec<u32>,
    /// The added tokens (content, id, special), longest first.
    added: Vec<(String, u32, bool)>,
    /// How [`Self::encode_chat`] writes prompts (Instruct unless set).
    format: ChatFormat,
}

/// A run of a prompt: an added token's id, or text that holds none to be recognised.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Token(u32),
    Text(&'a str),
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
        let mut added: Vec<(String, u32, bool)> =
            inner.get_added_tokens_decoder().into_iter().map(|(id, t)| (t.content, id, t.special)).collect();
        // Longest first: at one position the longest match wins, as in tokenizers' own matcher.
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(Self { inner, end_ids, added, format: ChatFormat::default() })
    }

    /// Adds end-of-answer ids (e.g. from generation_config.json).
    pub fn add_end_ids(&mut self, ids: &[u32]) {
        for &i in ids {
            if !self.end_ids.contains(&i) {
                self.end_ids.push(i);
            }
        }
    }

    /// Sets the chat format of the model's folder ([`ChatFormat::from_folder`]).
    pub fn set_chat_format(&mut self, format: ChatFormat) {
        self.format = format;
    }

    pub fn chat_format(&self) -> ChatFormat {
        self.format
    }

    pub fn is_end(&self, id: u32) -> bool {
        self.end_ids.contains(&id)
    }

    /// Token ids of trusted text; special tokens written in it are recognised. For prompts with
    /// messages from anyone else use [`Self::encode_chat`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of text in which no added token is recognised: `<|im_end|>` in it is encoded
    /// as the characters `<`, `|`, `im`, ...
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_segments(&[Segment::Text { text: text.to_string(), added: AddedTokens::None }])
    }

    /// Token ids of a chat prompt in this tokenizer's chat format (see [`render_segments_for`]);
    /// control tokens written in the messages stay text.
    pub fn encode_chat(&self, messages: &[Message], tools: &[serde_json::Value], add_generation_prompt: bool) -> Result<Vec<u32>> {
        self.encode_segments(&render_segments_for(self.format, messages, tools, add_generation_prompt))
    }

    /// Token ids of rendered segments.
    pub fn encode_segments(&self, segments: &[Segment]) -> Result<Vec<u32>> {
        let mut pieces = Vec::new();
        for seg in segments {
            match seg {
                Segment::Control { token, count } => {
                    let id = self
                        .token_id(token)
                        .ok_or_else(|| ModelError::Tokenizer(format!("the tokenizer has no {token} token")))?;
                    pieces.extend(std::iter::repeat_n(Piece::Token(id), *count));
                }
                Segment::Text { text, added } => self.split_added(text, *added, &mut pieces),
            }
        }
        // Adjacent text is encoded as one piece, as it is when the whole prompt is one string
        // (the pre-tokenizer may join the template's "\n" with the text after it).
        let mut ids = Vec::new();
        let mut text = String::new();
        for p in pieces {
            match p {
                Piece::Text(t) => text.push_str(t),
                Piece::Token(id) => {
                    self.encode_no_added(&text, &mut ids)?;
                    text.clear();
                    ids.push(id);
                }
            }
        }
        self.encode_no_added(&text, &mut ids)?;
        Ok(ids)
    }

    /// Splits `text` at the added tokens `which` allows (leftmost, then longest).
    fn split_added<'a>(&self, text: &'a str, which: AddedTokens, out: &mut Vec<Piece<'a>>) {
        let allowed = |special: bool| match which {
            AddedTokens::All => true,
            AddedTokens::NonSpecial => !special,
            AddedTokens::None => false,
        };
        if which == AddedTokens::None {
            out.push(Piece::Text(text));
            return;
        }
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let hit = self.added.iter().find(|(c, _, special)| allowed(*special) && !c.is_empty() && rest.starts_with(c.as_str()));
            if let Some((c, id, _)) = hit {
                if start < i {
                    out.push(Piece::Text(&text[start..i]));
                }
                out.push(Piece::Token(*id));
                i += c.len();
                start = i;
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            out.push(Piece::Text(&text[start..]));
        }
    }

    /// Appends the ids of `text` through the normalizer, pre-tokenizer and model only: what
    /// `encode` does between two added tokens, with no added token matched.
    fn encode_no_added(&self, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let err = |e: tokenizers::Error| ModelError::Tokenizer(e.to_string());
        let mut pre = PreTokenizedString::from(text);
        if let Some(n) = self.inner.get_normalizer() {
            pre.normalize(|s| n.normalize(s)).map_err(err)?;
        }
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(err)?;
        }
        let model = self.inner.get_model();
        pre.tokenize(|s| model.tokenize(s.get())).map_err(err)?;
        let enc = pre.into_encoding(None, 0, OffsetType::None).map_err(err)?;
        ids.extend_from_slice(enc.get_ids());
        Ok(())
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
