//! Chat templates (Jinja, as in `tokenizer_config.json`).
