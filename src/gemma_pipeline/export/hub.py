"""Optional upload of the export to the Hugging Face Hub (``export.push_to_hub``).

The token comes only from ``conf/local/credentials.yml`` (``huggingface: {token: ...}``) or the
environment (``HF_TOKEN``), and is handed to ``huggingface_hub`` as an argument: it is never a
parameter, so it never reaches a log, W&B or the report. ``preflight`` runs before any node:
offline, or without a token, the run fails at once with the reason, not after the export.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gemma_pipeline.config import HubPushParams

logger = logging.getLogger(__name__)

TOKEN_ENV = "HF_TOKEN"


class HubPushError(RuntimeError):
    """The push cannot happen; the message says why and what to change."""


def token_from(credentials: Mapping[str, Any] | None) -> str | None:
    """``huggingface.token`` from the credentials, else ``HF_TOKEN`` from the environment."""
    section = (credentials or {}).get("huggingface") or {}
    token = section.get("token") if isinstance(section, Mapping) else None
    return token or os.environ.get(TOKEN_ENV) or None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def preflight(push: HubPushParams | None, token: str | None) -> None:
    """Raise before any work when a configured push could not happen."""
    if push is None:
        return
    if _offline():
        raise HubPushError(
            f"export.push_to_hub is set ({push.repo_id}) but HF_HUB_OFFLINE is on: the Hub "
            "cannot be reached. Unset HF_HUB_OFFLINE, or set export.push_to_hub: null."
        )
    if not token:
        raise HubPushError(
            f"export.push_to_hub is set ({push.repo_id}) but no Hugging Face token was found: "
            f"put it in conf/local/credentials.yml (huggingface: {{token: ...}}) or {TOKEN_ENV}."
        )


def push_export(
    push: HubPushParams,
    token: str | None,
    *,
    merged_dir: str | Path,
    gguf_dir: str | Path,
    export_checks: Mapping[str, Any],
) -> dict[str, Any]:
    """Upload the merged folder (its README.md is the model card) and the GGUF files.

    Refuses an export whose checks failed: a broken file must not be published.
    """
    preflight(push, token)
    if not export_checks.get("passed"):
        raise HubPushError(
            f"not pushing to {push.repo_id}: the export checks failed (see export_checks.json)"
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(push.repo_id, private=push.private, exist_ok=True)
    logger.info("Uploading the merged model to %s", url)
    commit = api.upload_folder(
        repo_id=push.repo_id,
        folder_path=str(merged_dir),
        commit_message="gemma-pipeline: merged model and model card",
    )
    logger.info("Uploading the GGUF files to %s", url)
    gguf_commit = api.upload_folder(
        repo_id=push.repo_id,
        folder_path=str(gguf_dir),
        allow_patterns=["*.gguf"],
        commit_message="gemma-pipeline: GGUF files",
    )
    return {
        "pushed": True,
        "repo_id": push.repo_id,
        "private": push.private,
        "url": str(url),
        "commits": [str(commit.oid), str(gguf_commit.oid)],
    }
