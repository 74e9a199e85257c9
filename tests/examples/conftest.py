"""Fixtures for the example tests: load an example's run.py as a module, or run it as the README says."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    module_name = f"example_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "examples" / name / "run.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def _run(name: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "examples" / name / "run.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def load_example() -> Callable[[str], ModuleType]:
    """``load_example("mc_toy_limits")`` imports ``examples/mc_toy_limits/run.py`` as a module."""
    return _load


@pytest.fixture(scope="session")
def run_example() -> Callable[..., subprocess.CompletedProcess]:
    """``run_example(name, *args)`` runs ``python examples/<name>/run.py ARGS`` from the repository root."""
    return _run
