"""Configuration, loaded once by the caller and passed down: settings from `RECSYS_*` variables
(`load_settings`), and the product configuration of one file: the offer catalog, the reward rules
and the campaign rules (`load_config(settings.config)`).
"""

from recsys.config.product import Config, load_config

__all__ = ["Config", "load_config"]
