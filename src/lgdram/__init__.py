"""lgdram's public import package for plugin authors.

    import lgdram
    lgdram.plugin_api_version          # the plugin contract version this lgdram speaks
    from lgdram.plugin_api import DatasetGenerator, Model, Loss, ...
    from lgdram.testing import check_dataset, check_model, check_loss

The implementation lives in `lgdram_cli`; these modules are the stable names to import.
"""

from lgdram_cli import PLUGIN_API_VERSION as plugin_api_version
from lgdram_cli import __version__

__all__ = ["__version__", "plugin_api_version"]
