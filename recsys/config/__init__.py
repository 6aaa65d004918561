"""Configuration, loaded once by the caller and passed down: settings from `RECSYS_*` variables,
the offer catalog and the campaign rules.
"""
