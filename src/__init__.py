"""Config-driven fine-tuning of Qwen3-VL for dense grounding on ms-swift. See AGENTS.md for the layers."""
