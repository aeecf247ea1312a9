"""The daemon's configuration: model (dataclasses and defaults), schema (validation), load (TOML), checks."""
