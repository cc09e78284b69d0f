"""lgdram's public import package: the Python API (docs/api.md) and the plugin API.

    import lgdram
    run = lgdram.train(dataset="cmnist-60", steps=500, out="runs/first")
    run = lgdram.load("runs/first"); run.predict(images); run.evaluate(); run.visualize("g.gif")
    batch = lgdram.generate("cmnist-60", 16); lgdram.gen_data("cmnist-60", 1000, "train.h5")

    lgdram.register("model", "conv-ram", ConvRAM)   # in-process, for notebooks (or @lgdram.register(...))
    lgdram.plugin_api_version          # the plugin contract version this lgdram speaks
    from lgdram.plugin_api import DatasetGenerator, Model, Loss, Logger, ...
    from lgdram.testing import check_dataset, check_model, check_loss

`lgdram` is the public, stable import name; the implementation lives in `lgdram_cli`, which
may change. Importing `lgdram` is cheap: torch is imported when a function is first called.
"""

from lgdram.api import Prediction, Run, gen_data, generate, load, register, train
from lgdram_cli import PLUGIN_API_VERSION as plugin_api_version
from lgdram_cli import __version__

__all__ = [
    "Prediction", "Run", "__version__", "gen_data", "generate", "load", "plugin_api_version", "register", "train",
]
