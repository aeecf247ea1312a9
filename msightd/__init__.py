"""msightd: an MSight-compatible roadside camera pipeline run as one supervised daemon."""

__version__ = "0.1.0"
