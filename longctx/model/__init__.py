"""The model: one plain-PyTorch decoder for Olmo Hybrid and Olmo 3 checkpoints (see DESIGN.md)."""

from longctx.model.config import available_configs, check_config, config_from_dict, load_config
from longctx.model.hybrid import HybridLM

__all__ = ["HybridLM", "load_config", "config_from_dict", "check_config", "available_configs"]
