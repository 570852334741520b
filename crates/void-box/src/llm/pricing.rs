//! List prices of well-known models, to report a run's cost in USD.
//! Unknown models (local ones included) have no price: cost stays `None`.

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrice {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

impl ModelPrice {
    /// Cost of this many tokens.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1e6
    }
}

/// Prefix of the model name → price. Longest prefix wins, so dated
/// snapshots (`claude-sonnet-4-5-20250929`) match their family.
const PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4", 15.0, 75.0),
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-haiku", 0.25, 1.25),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("o3", 2.0, 8.0),
    ("o4-mini", 1.1, 4.4),
    ("deepseek-chat", 0.27, 1.1),
    ("deepseek-reasoner", 0.55, 2.19),
    ("mock", 0.0, 0.0),
];

/// The list price of `model`, when known.
pub fn price_per_million(model: &str) -> Option<ModelPrice> {
    PRICES
        .iter()
        .filter(|(prefix, _, _)| model.starts_with(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map(|&(_, input, output)| ModelPrice { input, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_unknown_is_none() {
        assert_eq!(price_per_million("gpt-4o-mini-2024").unwrap().input, 0.15);
        assert_eq!(price_per_million("gpt-4o").unwrap().input, 2.5);
        assert_eq!(
            price_per_million("claude-opus-4-5-20251101").unwrap().input,
            5.0
        );
        assert!(price_per_million("qwen3-coder").is_none());
        let p = price_per_million("claude-sonnet-4-5").unwrap();
        assert!((p.cost(1_000_000, 100_000) - 4.5).abs() < 1e-9);
    }
}
