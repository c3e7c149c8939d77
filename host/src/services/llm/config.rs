//! `llm.toml`: the operator's configuration of the `llm` service — where
//! the provider is, the name of the key's variable, the model map, timeouts,
//! retries, the cache, replay, and the models' prices.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CONFIG_FILE;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::units::{ByteSize, HumanDuration, Usd};

/// Whether the response cache is read, written, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Answer identical requests from the cache; store every new answer.
    #[default]
    ReadWrite,
    /// Store every answer, never answer from the cache (fresh samples, but
    /// the run can be replayed).
    Record,
    /// No cache.
    Off,
}

/// The host's LLM configuration (operator-owned; see the [module docs](super)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The API's base URL, up to and including the version path, e.g.
    /// `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`; requests go
    /// to `<base_url>/chat/completions`. Optional in replay mode.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the host environment variable holding the API key; `None`
    /// sends no `Authorization` header (a local server).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Grant model name → provider model name. Empty: names pass through
    /// unchanged. Otherwise a name not in the map is refused.
    #[serde(default, rename = "models")]
    pub model_map: BTreeMap<String, String>,
    /// Timeout of one attempt, connection to last body byte.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Extra attempts after a 429, a 5xx, a connection failure or a timeout.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff; doubles per retry.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    /// Longest backoff (and longest `Retry-After` honoured).
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Largest response body read.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: ByteSize,
    /// The response cache.
    #[serde(default)]
    pub cache: CacheMode,
    /// Where cached responses live; relative paths are under
    /// `$VIVARIUM_HOME` (default `llm-cache`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Answer only from the cache; never connect.
    #[serde(default)]
    pub replay: bool,
    /// Provider model → its price in USD per million tokens
    /// (`[prices."gpt-4o-mini"] prompt = 0.15, completion = 0.60`). A model
    /// with no price costs nothing and cannot be used under a dollar budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
}

/// A provider model's price, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million prompt tokens.
    pub prompt: f64,
    /// USD per million completion tokens.
    pub completion: f64,
}

impl Price {
    /// The cost of `prompt` and `completion` tokens, rounded up to the
    /// nano-dollar.
    pub fn cost(&self, prompt: u64, completion: u64) -> Usd {
        // USD per million tokens = nano-dollars per thousandth of a token.
        let nanos = (prompt as f64 * self.prompt + completion as f64 * self.completion) * 1e3;
        Usd(nanos.ceil().min(u64::MAX as f64) as u64)
    }
}

pub(super) fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}
pub(super) fn default_retries() -> u32 {
    3
}
pub(super) fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
pub(super) fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(20))
}
pub(super) fn default_max_response() -> ByteSize {
    ByteSize(8 << 20)
}

impl LlmConfig {
    /// A configuration for `base_url` with every other field at its default.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: Some(base_url.into()),
            api_key_env: None,
            model_map: BTreeMap::new(),
            timeout: default_timeout(),
            retries: default_retries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            max_response_bytes: default_max_response(),
            cache: CacheMode::default(),
            cache_dir: None,
            replay: false,
            prices: BTreeMap::new(),
        }
    }

    /// Parse and check configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: LlmConfig =
            toml::from_str(text).map_err(|e| Error::invalid(format!("{origin}: {}", e.to_string().trim_end())))?;
        config.check().map_err(|e| Error::invalid(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Read a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The host's configuration: the file `$VIVARIUM_LLM_CONFIG` names,
    /// else `<home>/llm.toml`, else a bare one from `$VIVARIUM_LLM_BASE_URL`
    /// (with `$VIVARIUM_LLM_API_KEY_ENV` naming the key's variable); `None`
    /// when none is there. `$VIVARIUM_LLM_REPLAY=1` turns replay on in any
    /// of them (and alone gives a replay-only configuration).
    pub fn discover(home: &Home) -> Result<Option<Self>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = if let Some(path) = var("VIVARIUM_LLM_CONFIG") {
            Some(Self::load(Path::new(&path))?)
        } else if home.root().join(CONFIG_FILE).is_file() {
            Some(Self::load(&home.root().join(CONFIG_FILE))?)
        } else if let Some(url) = var("VIVARIUM_LLM_BASE_URL") {
            let mut c = Self::new(url);
            c.api_key_env = var("VIVARIUM_LLM_API_KEY_ENV");
            c.check().map_err(|e| Error::invalid(format!("$VIVARIUM_LLM_BASE_URL: {e}")))?;
            Some(c)
        } else {
            None
        };
        if matches!(var("VIVARIUM_LLM_REPLAY").as_deref(), Some("1" | "true" | "yes")) {
            let c = config.get_or_insert_with(|| Self { base_url: None, ..Self::new("") });
            c.replay = true;
        }
        Ok(config)
    }

    pub(super) fn check(&self) -> std::result::Result<(), String> {
        match &self.base_url {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("base_url `{url}` must start with http:// or https://"));
                }
                reqwest::Url::parse(url).map_err(|e| format!("base_url `{url}` is not a URL: {e}"))?;
            }
            None if !self.replay => return Err("base_url is required unless replay = true".into()),
            None => {}
        }
        if let Some(name) = &self.api_key_env {
            let ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(format!("api_key_env `{name}` is not an environment variable name"));
            }
        }
        if self.timeout.0.is_zero() {
            return Err("timeout must be above 0".into());
        }
        for (model, p) in &self.prices {
            for (side, v) in [("prompt", p.prompt), ("completion", p.completion)] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "prices.\"{model}\".{side} = {v} is not a price; write USD per million tokens, 0 or more"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The price of `provider_model`, if `prices` names it.
    pub fn price(&self, provider_model: &str) -> Option<&Price> {
        self.prices.get(provider_model)
    }

    pub(super) fn url(&self) -> Option<String> {
        self.base_url.as_ref().map(|b| format!("{}/chat/completions", b.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::LlmConfig;

    /// Every `llm.toml` the README and docs show (a ```toml block with a
    /// `base_url`) is one the host accepts, so a reader who copies one gets
    /// a working file, not an error.
    #[test]
    fn every_llm_toml_the_docs_show_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("README.md")];
        let docs = std::fs::read_dir(root.join("docs")).unwrap();
        files.extend(docs.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension() == Some("md".as_ref())));
        let mut checked = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, block) in text.split("```toml\n").skip(1).enumerate() {
                let block = block.split("```").next().unwrap();
                if !block.lines().any(|l| l.trim_start().starts_with("base_url")) {
                    continue;
                }
                let origin = format!("{} toml block {}", file.display(), i + 1);
                if let Err(e) = LlmConfig::parse(block, &origin) {
                    panic!("{e}\n{block}");
                }
                checked += 1;
            }
        }
        // README: OpenAI, vLLM, Ollama, and the coder run's two.
        assert!(checked >= 5, "only {checked} llm.toml blocks found");
    }
}
