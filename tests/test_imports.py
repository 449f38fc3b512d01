"""The package's import graph: light entry points load no torch, and no cycles.

Each check runs in a fresh interpreter (``sys.modules`` of the test process already holds
everything) with this checkout first on the path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "cv2", "av", "h5py")


def loaded_after(code: str) -> set[str]:
    """The top-level modules in ``sys.modules`` after running ``code`` in a fresh Python."""
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", ["avstm", "avstm.io", "avstm.errors", "avstm.config",
                                    "avstm._version"])
def test_light_modules_import_no_stage(module):
    loaded = loaded_after(f"import {module}")
    assert module in loaded
    assert not [m for m in HEAVY if m in loaded]
    assert not [m for m in loaded if m.startswith(("avstm.memnet", "avstm.extract", "avstm.cache"))]


def test_public_names_resolve_on_first_use():
    loaded = loaded_after("import avstm\nassert callable(avstm.extract) and callable(avstm.train)\n"
                          "import avstm.extract.pipeline, avstm.evaluate.run, avstm.memnet.train\n"
                          "assert callable(avstm.extract) and callable(avstm.evaluate)\n"
                          "assert callable(avstm.memnet.train)\n"
                          "from avstm import ExtractConfig, __version__\n"
                          "assert set(avstm.__all__) <= set(dir(avstm))")
    assert "torch" in loaded and "avstm.extract.pipeline" in loaded


@pytest.mark.parametrize("command", [[], ["extract"], ["train"], ["localize"], ["evaluate"], ["synth"],
                                     ["demo"], ["export"], ["cache"]])
def test_help_of_every_command_loads_no_torch(command):
    # the CLI builds its options from the stages' configs, which import no torch
    loaded = loaded_after("from avstm.cli import cli\n"
                          f"try:\n    cli({command + ['--help']!r}, prog_name='avstm')\n"
                          "except SystemExit as e:\n    assert e.code == 0, e.code\n")
    assert "avstm.cli" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_reading_verifying_and_merging_a_cache_load_no_torch():
    # only the writer (its float16 encoding) needs torch: `avstm cache verify|merge` do not
    loaded = loaded_after("import avstm.cache.format, avstm.cache.reader, avstm.cache.verify, "
                          "avstm.cache.merge\nfrom avstm.cache import FeatureCache, verify_cache, "
                          "merge_caches, check_fits, CONTENT_FIELDS")
    assert "h5py" in loaded and "avstm.cache.reader" in loaded
    assert "torch" not in loaded and "avstm.cache.writer" not in loaded
