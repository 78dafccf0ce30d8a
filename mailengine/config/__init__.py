"""Settings: one declaration per setting (schema), load + validate, live changes, persistence."""

from mailengine.config.loader import ConfigError, load_config, load_or_create
from mailengine.config.model import Config

__all__ = ["Config", "ConfigError", "load_config", "load_or_create"]
