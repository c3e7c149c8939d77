//! Unit tests of the `llm` service's parts (the integration tests with a
//! scripted server are in `tests/all/services.rs`).

use super::config::*;
use super::protocol::*;
use super::*;
use crate::units::Usd;

#[test]
fn config_parses_with_defaults_and_checks() {
    let c = LlmConfig::parse(
        "base_url = \"http://127.0.0.1:8000/v1/\"\napi_key_env = \"MY_KEY\"\nretries = 1\n[models]\nsmall = \"qwen2.5:0.5b\"\n",
        "llm.toml",
    )
    .unwrap();
    assert_eq!(c.url().unwrap(), "http://127.0.0.1:8000/v1/chat/completions");
    assert_eq!(c.model_map["small"], "qwen2.5:0.5b");
    assert_eq!(c.timeout, default_timeout());
    assert_eq!(c.cache, CacheMode::ReadWrite);
    for bad in [
        "base_url = \"ftp://x\"",
        "api_key_env = \"A\"",
        "base_url = \"http://x\"\napi_key_env = \"BAD-NAME\"",
        "base_url = \"http://x\"\nsurprise = 1",
        "base_url = \"http://x\"\ncache = \"sometimes\"",
    ] {
        assert!(LlmConfig::parse(bad, "llm.toml").is_err(), "{bad}");
    }
    assert!(LlmConfig::parse("replay = true", "llm.toml").unwrap().replay);
}

#[test]
fn parses_openai_responses() {
    let c = parse_completion(
        br#"{"id":"x","object":"chat.completion","model":"m-1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
    )
    .unwrap();
    assert_eq!(
        c,
        Completion {
            content: "hi".into(),
            tool_calls: vec![],
            model: "m-1".into(),
            finish_reason: "stop".into(),
            prompt_tokens: Some(9),
            completion_tokens: Some(2)
        }
    );
    assert!(parse_completion(b"{not json").unwrap_err().starts_with("not JSON"));
    assert!(parse_completion(br#"{"choices":[]}"#).is_err());
    assert!(parse_completion(br#"{"choices":[{"message":{"content":5}}]}"#).is_err());
    let bare = parse_completion(br#"{"choices":[{"message":{"content":null}}]}"#).unwrap();
    assert_eq!((bare.content.as_str(), bare.prompt_tokens), ("", None));
}

#[test]
fn prices_parse_cost_and_refuse_negatives() {
    let c = LlmConfig::parse(
        "base_url = \"http://x/v1\"\n[prices.\"gpt-4o-mini\"]\nprompt = 0.15\ncompletion = 0.60\n",
        "llm.toml",
    )
    .unwrap();
    let p = c.price("gpt-4o-mini").unwrap();
    // 1M prompt tokens at $0.15 and 1M completion tokens at $0.60.
    assert_eq!(p.cost(1_000_000, 1_000_000), Usd::from_dollars(0.75).unwrap());
    // 1000 prompt + 500 completion: $0.00015 + $0.0003.
    assert_eq!(p.cost(1000, 500).to_string(), "$0.00045");
    assert!(c.price("other").is_none());
    let bad = LlmConfig::parse("base_url = \"http://x/v1\"\n[prices.m]\nprompt = -1\ncompletion = 0\n", "llm.toml")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("prices.\"m\".prompt = -1 is not a price"), "{bad}");
    assert!(LlmConfig::parse("base_url = \"http://x/v1\"\n[prices.m]\nprompt = 1\n", "llm.toml").is_err());
}

#[test]
fn rate_window_and_scrubbing() {
    // SAFETY: a variable only this test reads.
    unsafe { std::env::set_var("VIVARIUM_LLM_UNIT_KEY", "sk-unit-secret") };
    let mut c = LlmConfig::new("http://127.0.0.1:9/v1");
    c.api_key_env = Some("VIVARIUM_LLM_UNIT_KEY".into());
    let s = LlmService::new(c, None, None).unwrap();
    assert!(s.take_rate("b", 2));
    assert!(s.take_rate("b", 2));
    assert!(!s.take_rate("b", 2));
    assert!(s.take_rate("c", 2));
    assert_eq!(s.scrub("bad key sk-unit-secret\x1b[0m"), "bad key [redacted]\u{FFFD}[0m");
    assert!(!format!("{s:?}").contains("sk-unit-secret"));
    assert_eq!(estimate_prompt_tokens(["abcd", "abcde"]), 3 + 1 + 4 + 2 + 4);
}
