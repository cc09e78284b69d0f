"""The public plugin API (see `lgdram_cli.plugin_api` for the conventions)."""

from lgdram_cli.plugin_api import *  # noqa: F403
from lgdram_cli.plugin_api import __all__  # noqa: F401
