//! Text to token ids, with the `tokenizers` crate: a real Qwen2 `tokenizer.json`, or a
//! small word-level vocabulary built in code for the synthetic set.

use std::path::Path;

use tokenizers::Tokenizer;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;

use uno_packing::SpecialTokens;

use crate::DataError;

/// A tokenizer that never adds special tokens: the packer frames texts itself.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// BAGEL's special tokens, in [`SpecialTokens`] field order (Qwen2.5's names).
pub const SPECIAL_TOKENS: [&str; 4] = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
];

/// The word-level tokenizer's unknown-word token (id 0).
pub const UNK: &str = "[UNK]";

impl TextTokenizer {
    /// Load a Hugging Face `tokenizer.json` (e.g. Qwen2.5's, as BAGEL ships it).
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| DataError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner })
    }

    /// A whitespace/punctuation word-level tokenizer over `words` (ids from 1 in order;
    /// id 0 is `[UNK]`). Duplicates are ignored.
    pub fn word_level<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Self, DataError> {
        let mut vocab = vec![(UNK.to_string(), 0u32)];
        for word in words {
            if !vocab.iter().any(|(w, _)| w == word) {
                vocab.push((word.to_string(), vocab.len() as u32));
            }
        }
        let model = WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token(UNK.to_string())
            .build()
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        let mut inner = Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(Whitespace {}));
        Ok(Self { inner })
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| DataError::Tokenizer(format!("encoding {text:?}: {e}")))
    }

    /// The text of `ids`; special tokens are kept in the output.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| DataError::Tokenizer(format!("decoding {ids:?}: {e}")))
    }

    /// Vocabulary size including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of one token of the vocabulary (added tokens included), `None` if absent.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The ids of BAGEL's four special tokens (Qwen2.5's names, which the synthetic
    /// vocabulary uses too), for `PackingConfig::special_tokens`; the error names the first
    /// one the vocabulary lacks.
    pub fn special_tokens(&self) -> Result<SpecialTokens, DataError> {
        let id = |name: &str| {
            self.token_id(name).ok_or_else(|| {
                DataError::Tokenizer(format!("the vocabulary has no special token {name}"))
            })
        };
        Ok(SpecialTokens {
            im_start: id(SPECIAL_TOKENS[0])?,
            im_end: id(SPECIAL_TOKENS[1])?,
            vision_start: id(SPECIAL_TOKENS[2])?,
            vision_end: id(SPECIAL_TOKENS[3])?,
        })
    }

    /// Save as a `tokenizer.json` (so a trained toy model ships with its vocabulary).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        self.inner
            .save(path, false)
            .map_err(|e| DataError::Tokenizer(format!("{}: {e}", path.display())))
    }
}
