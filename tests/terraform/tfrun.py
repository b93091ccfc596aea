"""Running the real terraform binary on a copy of terraform/ against the stand-in Google provider.

terraform installs the provider from a filesystem mirror that offers one version (the one whose schema the
plugin serves), so `terraform init` checks versions.tf's constraint for real and writes a lock file; nothing
reaches the network. The plugin's Python side (the `tf` framework) is installed once into the test cache
without its dependencies: it pins protobuf below 6, which the project's Google clients have left behind, and
its protocol bindings load on the newer runtime.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from google_schema import cache_dir, provider_schema
from tfparse import REPO, TERRAFORM

TERRAFORM_BIN = shutil.which("terraform")
TF_FRAMEWORK = "tf==1.2.0"
HERE = Path(__file__).resolve().parent


def used_types() -> tuple[set[str], set[str]]:
    """The google_* resource and data source types terraform/ and its examples use."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in TERRAFORM.rglob("*.tf"))
    return (
        set(re.findall(r'^resource "(google_\w+)"', text, re.M)),
        set(re.findall(r'^data "(google_\w+)"', text, re.M)),
    )


def _framework(cache: Path) -> Path:
    target = cache / "pylib"
    with (cache / "pylib.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "tf" / "runner.py").exists():
            uv = Path(sys.executable).parent / "uv"  # make install puts it in the virtualenv
            install = (
                [str(uv), "pip", "install", "-q", "--no-deps", "--python", sys.executable]
                if uv.exists()
                else [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
            )
            subprocess.run([*install, "--target", str(target), TF_FRAMEWORK], check=True)
    return target


def mirror(version: str) -> Path:
    """A filesystem mirror holding the stand-in provider as hashicorp/google ``version``."""
    cache = cache_dir(REPO)
    schema = provider_schema(REPO, version, *used_types())
    pylib = _framework(cache)
    root = cache / f"mirror-{schema.stem}"
    package = root / "registry.terraform.io" / "hashicorp" / "google" / version / "linux_amd64"
    plugin = package / f"terraform-provider-google_v{version}"
    home = cache / "home"  # tf keeps its TLS certificate under ~/.cache
    script = (
        "#!/bin/sh\n"
        f"HOME='{home}' PYTHONPATH='{pylib}:{HERE}' FAKEGOOGLE_SCHEMA='{schema}' "
        f"exec '{sys.executable}' '{HERE / 'fakegoogle.py'}' \"$@\"\n"
    )
    # Written again when it names another checkout or virtualenv; atomically, as workers share it.
    if not plugin.exists() or plugin.read_text() != script:
        package.mkdir(parents=True, exist_ok=True)
        partial = plugin.with_name(f"{plugin.name}.{os.getpid()}.part")
        partial.write_text(script)
        partial.chmod(0o755)
        partial.rename(plugin)
    return root


@dataclass
class Workspace:
    """A copy of terraform/ (with jobs/ beside it, which the module reads) and the environment to run in."""

    root: Path
    env: dict[str, str]
    store: Path

    def run(self, *args: str, cwd: str = "terraform", check: bool = True) -> subprocess.CompletedProcess[str]:
        assert TERRAFORM_BIN
        result = subprocess.run(
            [TERRAFORM_BIN, *args],
            cwd=self.root / cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} in {cwd} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def left(self) -> list[dict[str, str]]:
        """The objects the provider created and no destroy has removed."""
        return [json.loads(p.read_text()) for p in sorted(self.store.glob("*.json"))]


def workspace(tmp: Path, version: str) -> Workspace:
    root = tmp / "repo"
    shutil.copytree(TERRAFORM, root / "terraform", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copytree(REPO / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    store = tmp / "google-objects"
    store.mkdir()
    cli_config = tmp / "terraformrc"
    cli_config.write_text(
        "provider_installation {\n  filesystem_mirror {\n"
        f'    path    = "{mirror(version)}"\n'
        '    include = ["registry.terraform.io/hashicorp/google"]\n  }\n}\n'
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "FAKEGOOGLE_STORE": str(store),
    }
    return Workspace(root, env, store)
