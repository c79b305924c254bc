"""Kedro project settings (only what differs from Kedro's defaults)."""

from kedro.config import OmegaConfigLoader

# Read by Kedro; defined in config.py because the console script reads conf/ the same way.
from gemma_pipeline.config import CONFIG_LOADER_ARGS
from gemma_pipeline.datasets import ArtifactCatalog
from gemma_pipeline.hooks import (
    HubPushHook,
    ParameterValidationHook,
    RunMetadataHook,
    WandbTrackingHook,
)

# pluggy calls the last registered first: a push that could not happen fails the run before the
# W&B run starts.
HOOKS = (ParameterValidationHook(), RunMetadataHook(), WandbTrackingHook(), HubPushHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader

# A failed save (a full disk, a refused write) leaves nothing, and names dataset and path.
DATA_CATALOG_CLASS = ArtifactCatalog

__all__ = ["CONFIG_LOADER_ARGS", "CONFIG_LOADER_CLASS", "DATA_CATALOG_CLASS", "HOOKS"]
