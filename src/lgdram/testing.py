"""The plugin conformance kit (see `lgdram_cli.testing`)."""

from lgdram_cli.testing import (  # noqa: F401
    CheckReport,
    CheckSkipped,
    ConformanceError,
    check_batch,
    check_dataset,
    check_loss,
    check_model,
    check_output,
    check_registered,
)

__all__ = [
    "CheckReport",
    "CheckSkipped",
    "ConformanceError",
    "check_batch",
    "check_dataset",
    "check_loss",
    "check_model",
    "check_output",
    "check_registered",
]
