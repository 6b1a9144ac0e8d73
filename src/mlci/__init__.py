"""mlci: the tutorial's Docker-and-Jenkins ML pipeline, done properly."""

__all__ = ["__version__"]
__version__ = "0.1.0"
