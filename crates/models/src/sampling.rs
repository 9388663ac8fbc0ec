//! Logits processors and token sampling.
