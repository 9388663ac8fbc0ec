//! GGUF files: reading, dequantizing and writing.
