"""A tiny random Qwen3-VL (or Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE: `--arch`) for CPU tests and smoke runs
(`python -m src.tiny_model --out DIR`).

`model.py` builds the model, processor and tokenizer; `tokenizer.py` the offline BPE with Qwen's special
tokens at their real ids; `chat_template.jinja` is Qwen3-VL-Instruct's chat template, verbatim.
"""

from src.tiny_model.model import BUILDER_VERSION, build_tiny_model, main, tiny_config

__all__ = ["BUILDER_VERSION", "build_tiny_model", "main", "tiny_config"]
