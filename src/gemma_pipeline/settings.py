"""Kedro project settings (only what differs from Kedro's defaults)."""

from kedro.config import OmegaConfigLoader

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
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/demo (the offline embedded default) overrides a few keys of conf/base, not whole
    # sections: soft-merge parameters so an environment holds only what differs.
    "merge_strategy": {"parameters": "soft"},
}
