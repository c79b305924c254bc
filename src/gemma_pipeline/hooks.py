"""Project hooks. They observe and check; model and data logic stays in the nodes."""

from __future__ import annotations

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl

from gemma_pipeline.config import validate_all


class ParameterValidationHook:
    """Fail on a bad parameter before any node runs, naming every offending key."""

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        validate_all(context.params)
