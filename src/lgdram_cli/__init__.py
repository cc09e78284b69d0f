"""lgdram: stochastic recurrent attention models trained with location guidance."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lgdram")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

#: Version of the plugin contract (base classes, config models, tensor conventions).
#: Bumped on any breaking change; plugins declare the version they were built for.
PLUGIN_API_VERSION = 1

__all__ = ["PLUGIN_API_VERSION", "__version__"]
