"""Kedro project settings (only what differs from Kedro's defaults)."""

from kedro.config import OmegaConfigLoader

from gemma_pipeline.hooks import (
    HubPushHook,
    ParameterValidationHook,
    RunMetadataHook,
    WandbTrackingHook,
)

HOOKS = (ParameterValidationHook(), HubPushHook(), RunMetadataHook(), WandbTrackingHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/demo (the offline embedded default) overrides a few keys of conf/base, not whole
    # sections: soft-merge parameters so an environment holds only what differs.
    "merge_strategy": {"parameters": "soft"},
}
