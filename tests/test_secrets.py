"""Issue 14: fake W&B and Hugging Face tokens, in conf/local/credentials.yml and in the
environment, through a whole `kedro run`; then every file the run left and everything it
printed is searched for them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

# Plausible shapes: W&B keys are 40 hex characters, Hugging Face tokens start with hf_.
TOKENS = {
    "wandb, credentials.yml": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
    "wandb, environment": "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4",
    "huggingface, credentials.yml": "hf_FakeTokenFromCredentialsFile0123456789",
    "huggingface, environment": "hf_FakeTokenFromTheEnvironment9876543210",
}


@pytest.mark.e2e
def test_no_token_reaches_an_artifact_a_log_or_the_output(tiny_project_files, tmp_path):
    root = tiny_project_files(tmp_path / "project")
    (root / "conf" / "local" / "credentials.yml").write_text(
        yaml.safe_dump(
            {
                "wandb": {"api_key": TOKENS["wandb, credentials.yml"]},
                "huggingface": {"token": TOKENS["huggingface, credentials.yml"]},
            }
        )
    )
    tiny = root / "conf" / "tiny" / "parameters_tiny.yml"
    params = yaml.safe_load(tiny.read_text())
    params["tracking"] = {**params.get("tracking", {}), "mode": "offline"}  # W&B writes files
    tiny.write_text(yaml.safe_dump(params))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("WANDB_MODE", "WANDB_API_KEY", "HF_TOKEN")
    }
    env |= {
        "WANDB_API_KEY": TOKENS["wandb, environment"],
        "HF_TOKEN": TOKENS["huggingface, environment"],
        "HF_HUB_OFFLINE": "1",
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env", "tiny"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    scanned = {"stdout": result.stdout.encode(), "stderr": result.stderr.encode()}
    files = [path for path in root.rglob("*") if path.is_file() and "credentials" not in path.name]
    scanned |= {str(path.relative_to(root)): path.read_bytes() for path in files}
    wandb_files = [name for name in scanned if "wandb" in name]
    assert wandb_files, "the offline W&B run wrote no files to scan"
    assert any(name.endswith(".gguf") for name in scanned), "no GGUF to scan"
    hits = [
        f"{where} holds the {kind} token"
        for where, content in scanned.items()
        for kind, token in TOKENS.items()
        if token.encode() in content
    ]
    assert hits == [], hits
    print(f"scanned {len(scanned)} files and streams, {sum(map(len, scanned.values())):,} bytes")
    assert len(scanned) > 50  # the run's artifacts, W&B files, logs and the output
