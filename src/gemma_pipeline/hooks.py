"""Project hooks. They observe and check; model and data logic stays in the nodes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol, MemoryDataset
from kedro.pipeline import Node, Pipeline

from gemma_pipeline.config import ExportParams, TrackingParams, parse_params, validate_all
from gemma_pipeline.distributed import is_main_process, rank, world_size
from gemma_pipeline.export.hub import TOKEN_ENV, preflight, token_from
from gemma_pipeline.provenance import run_metadata, with_pipeline
from gemma_pipeline.redaction import redact, scrub
from gemma_pipeline.tracking import WandbTracker, api_key_from, resolve_mode

logger = logging.getLogger(__name__)


class ParameterValidationHook:
    """Fail on a bad parameter before any node runs, naming every offending key."""

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        # The config loader's parameters (runtime --params merged in), not ``context.params``:
        # reading those makes Kedro import every pipeline first (torch and all, ~6 s here)
        # to look for typed parameters, and a misspelled key should fail before that.
        validate_all(context.config_loader["parameters"])


def _credentials(context: KedroContext | None) -> Mapping[str, Any]:
    """``conf/<env>/credentials.yml``; empty where there is none (a fresh checkout)."""
    if context is None:
        return {}
    try:
        credentials = context.config_loader["credentials"]
    except Exception:
        return {}
    return credentials if isinstance(credentials, Mapping) else {}


class HubPushHook:
    """A run that would push to the Hub (``export.push_to_hub``) fails before any node when
    the push could not happen: offline, or no token. The token from ``credentials.yml`` is
    handed to huggingface_hub the way it reads one, through ``HF_TOKEN`` in this process."""

    def __init__(self) -> None:
        self._context: KedroContext | None = None

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._context = context

    @hook_impl
    def before_pipeline_run(self, pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        if not any(node.name == "push_to_hub" for node in pipeline.nodes):
            return
        params = parse_params(ExportParams, catalog.load("params:export"), "export")
        token = token_from(_credentials(self._context))
        preflight(params.push_to_hub, token)
        if params.push_to_hub is not None and token:
            os.environ.setdefault(TOKEN_ENV, token)


class RunMetadataHook:
    """Put what a run starts from in the catalog as ``run_metadata``, for the report.

    Data versions (what every versioned dataset would load), ``--load-versions`` pins, this
    run's save version, environment, git commit, python and package versions. It is an
    in-memory dataset made here, so the report works however the run was sliced
    (``--pipeline report`` included).
    """

    def __init__(self) -> None:
        self._env: str | None = None
        self._project_path: Path | None = None

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        # No --env means the config loader's default run environment (conf/local).
        self._env = context.env or getattr(context.config_loader, "default_run_env", None)
        self._project_path = context.project_path

    @hook_impl
    def after_catalog_created(
        self,
        catalog: CatalogProtocol,
        save_version: str | None,
        load_versions: dict[str, str] | None,
    ) -> None:
        # No node has saved yet: the versions resolved now are the ones the run starts from.
        catalog["run_metadata"] = run_metadata(
            catalog,
            save_version=save_version,
            load_versions=load_versions,
            env=self._env,
            project_path=self._project_path,
        )

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        try:
            metadata = catalog.load("run_metadata")
        except Exception:  # a catalog made without this hook: nothing to complete
            return
        catalog.save("run_metadata", with_pipeline(metadata, run_params, pipeline.all_outputs()))


class WandbTrackingHook:
    """One Weights & Biases run per ``kedro run`` (parameters: ``tracking``).

    Logs the redacted parameters as the run's config, the training curves (the Trainer's own
    W&B callback writes into this run) and totals, the held-out and benchmark metrics
    (``heldout_metrics``, ``benchmark_metrics``) and the report.
    Tracking observes: any failure in it is a warning, never a failed pipeline. The API key
    (``conf/local/credentials.yml`` ``wandb.api_key``, or ``WANDB_API_KEY``) is handed to wandb
    only in online mode, and never logged or put in the config.
    """

    def __init__(self) -> None:
        self._context: KedroContext | None = None
        self._catalog: CatalogProtocol | None = None
        self._tracker: WandbTracker | None = None
        self._log_model = False

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._context = context

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        self._finish(exit_code=0)  # a run left open by an interrupted session
        if not is_main_process():  # a data-parallel launch's other processes only help train
            return
        api_key = None
        try:
            params = catalog.load("parameters")
            settings = parse_params(TrackingParams, params.get("tracking") or {}, "tracking")
            api_key = api_key_from(_credentials(self._context), os.environ)
            mode = resolve_mode(settings.mode, os.environ.get("WANDB_MODE"), api_key is not None)
            directory = Path(settings.dir)
            if not directory.is_absolute():
                directory = Path(run_params.get("project_path") or ".") / directory
        except Exception as error:  # tracking never fails the pipeline
            logger.warning(
                "W&B tracking is off for this run (%s).",
                scrub(f"{type(error).__name__}: {error}", [api_key or ""]),
            )
            return
        try:
            metadata = catalog.load("run_metadata")
        except Exception:  # without RunMetadataHook the run is still worth tracking
            metadata = {}
        kedro_run = {
            "run_id": run_params.get("run_id"),
            "env": run_params.get("env"),
            "pipeline_names": run_params.get("pipeline_names"),
            "load_versions": run_params.get("load_versions"),
            **{key: metadata.get(key) for key in ("git", "dataset_versions", "packages")},
        }
        self._tracker = WandbTracker.start(
            mode=mode,
            project=settings.project,
            entity=settings.entity,
            directory=directory,
            # Dataset names are not credentials ("tokenized"): only parameters are redacted
            # by name; known secret values are cut out of everything by the tracker.
            config={**redact(params, [api_key or ""]), "kedro": kedro_run},
            name=run_params.get("run_id"),
            tags=run_params.get("pipeline_names") or ["__default__"],
            api_key=api_key,
        )
        self._catalog = catalog
        self._log_model = settings.log_model

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        if self._tracker is None:
            return
        # Keyed by dataset, not node name: whichever node writes these, they are logged.
        if isinstance(outputs.get("train_metrics"), Mapping):
            self._tracker.log_train_metrics(outputs["train_metrics"])
        if isinstance(outputs.get("heldout_metrics"), Mapping):
            self._tracker.log_heldout_metrics(outputs["heldout_metrics"])
        if isinstance(outputs.get("benchmark_metrics"), Mapping):
            self._tracker.log_benchmark_metrics(outputs["benchmark_metrics"])
        if isinstance(outputs.get("report_html"), str):
            self._tracker.log_report(outputs["report_html"], outputs.get("report_md"))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        # The adapter is logged from disk, so only once the catalog has saved it.
        if self._tracker is None or not self._log_model or dataset_name != "adapter":
            return
        try:
            path = self._catalog.load("adapter")  # the saved folder's path
        except Exception as error:  # tracking never fails the pipeline
            logger.warning("W&B tracking could not find the saved adapter (%s).", error)
            return
        self._tracker.log_adapter(path)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._finish(exit_code=0)

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._finish(exit_code=1)

    def _finish(self, exit_code: int) -> None:
        if self._tracker is not None:
            self._tracker.finish(exit_code=exit_code)
        self._tracker, self._catalog = None, None


#: The node that trains data-parallel when the run is launched as several processes.
TRAINING_NODE = "train_qlora"


class _NoReplacingWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Replacing dataset")


class DataParallelHook:
    """A run launched as several processes (``torchrun``, ``accelerate launch``) is one run.

    Every process runs this same ``kedro run``. Rank 0 is the run: it runs every node and writes
    every artifact, checkpoint, W&B record and the report. A process of rank > 0 only helps
    train: ``pipeline_registry`` cuts its pipelines to ``train_qlora`` and the nodes it needs,
    and here its outputs become in-memory datasets, so it writes nothing into ``data/``; it
    computes the data stages itself (the training library checks that its rows are rank 0's)
    and ends with training, while rank 0 goes on to evaluate. A run without the training node is
    refused: each process would run all of it.
    """

    @hook_impl
    def before_pipeline_run(self, pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        processes = world_size()
        if processes == 1:
            return
        if TRAINING_NODE not in {node.name for node in pipeline.nodes}:
            raise ValueError(
                f"This run was launched as {processes} processes but has no {TRAINING_NODE} "
                f"node, the only one that trains data-parallel: every process would run it "
                f"whole. Run it without torchrun / accelerate launch."
            )
        if is_main_process():
            return
        outputs = sorted(pipeline.all_outputs())
        quiet = _NoReplacingWarnings()
        catalog_logger = logging.getLogger(type(catalog).__module__)
        catalog_logger.addFilter(quiet)
        try:
            for name in outputs:  # "assign": the adapter is not copied on its way out
                catalog[name] = MemoryDataset(copy_mode="assign")
        finally:
            catalog_logger.removeFilter(quiet)
        logger.info(
            "Process %d of %d: trains only, keeping its %d outputs in memory (rank 0 saves them)",
            rank(),
            processes,
            len(outputs),
        )
