"""Kedro project settings (only what differs from Kedro's defaults)."""

from kedro.config import OmegaConfigLoader

# Read by Kedro; defined in config.py because the console script reads conf/ the same way.
from gemma_pipeline.config import CONFIG_LOADER_ARGS
from gemma_pipeline.datasets import ArtifactCatalog
from gemma_pipeline.distributed import rank
from gemma_pipeline.hooks import (
    DataParallelHook,
    HubPushHook,
    ParameterValidationHook,
    RunMetadataHook,
    WandbTrackingHook,
)

# pluggy calls the last registered first: a push that could not happen, or a run that several
# processes would each run whole, fails before the W&B run starts.
HOOKS = (
    ParameterValidationHook(),
    RunMetadataHook(),
    WandbTrackingHook(),
    HubPushHook(),
    DataParallelHook(),
)

# Another process of a data-parallel launch writes nothing, kedro-viz's run records included
# (.viz/ in the project): rank 0 writes them for the run.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-viz",) if rank() > 0 else ()

CONFIG_LOADER_CLASS = OmegaConfigLoader

# A failed save (a full disk, a refused write) leaves nothing, and names dataset and path.
DATA_CATALOG_CLASS = ArtifactCatalog

__all__ = [
    "CONFIG_LOADER_ARGS",
    "CONFIG_LOADER_CLASS",
    "DATA_CATALOG_CLASS",
    "DISABLE_HOOKS_FOR_PLUGINS",
    "HOOKS",
]
