"""The command line is light: ``--help`` of every command loads no model library, and importing the CLI changes no
global state; errors are one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "diffusers", "transformers", "peft", "gradio", "matplotlib"}
HELP = [[], ["edit"], ["generate"], ["bench"], ["bench", "dragbench"], ["bench", "drag100"], ["bench", "report"],
        ["bench", "shapes"], ["ui"], ["shapes"], ["shapes", "train"], ["shapes", "quality"]]


def python(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def imported_modules(importtime_stderr: str) -> set[str]:
    """Top-level packages named in ``python -X importtime`` output ("import time: self | cumulative | name")."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


@pytest.mark.parametrize("command", HELP, ids=lambda c: " ".join(c) or "dragkit")
def test_help_imports_no_model_library(command):
    r = python("-X", "importtime", "-m", "dragkit", *command, "--help")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage: dragkit" in r.stdout
    assert not imported_modules(r.stderr) & HEAVY, sorted(imported_modules(r.stderr) & HEAVY)


def test_shapes_train_module_help_is_light_and_has_the_cli_options():
    r = python("-X", "importtime", "-m", "dragkit.shapes.train_command")
    assert r.returncode == 0 and not imported_modules(r.stderr) & HEAVY
    cli = python("-m", "dragkit", "shapes", "train", "--help").stdout
    module = python("-m", "dragkit.shapes.train", "--help").stdout
    options = {w for w in cli.split() if w.startswith("--")} - {"--verbose"}  # every command's -v
    assert options and options == {w for w in module.split() if w.startswith("--")}


def test_importing_the_cli_changes_no_global_state():
    script = """
import logging, os, sys, warnings
import numpy, PIL.Image  # their own import-time warning filters are not the CLI's
filters, environ, handlers = list(warnings.filters), dict(os.environ), list(logging.getLogger().handlers)
import dragkit.cli
dragkit.cli.build_parser()
assert list(warnings.filters) == filters, "warnings.filters changed"
assert dict(os.environ) == environ, "os.environ changed"
assert logging.getLogger().handlers == handlers, "logging configured"
heavy = sorted(m for m in sys.modules if m.split(".")[0] in %r)
assert not heavy, heavy
print("ok")
""" % sorted(HEAVY)
    r = python("-c", script)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_first_line_of_an_exception():
    from dragkit.errors import first_line
    from dragkit.types import DragError

    assert first_line(ValueError("bad thing\n  details")) == "bad thing"
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(KeyError("points"), with_type=True) == "KeyError: 'points'"
    assert first_line(DragError("a user's message\nmore"), with_type=True) == "a user's message"
    assert first_line(RuntimeError("  "), with_type=True) == "RuntimeError"


def test_fields_lists_every_config_field_with_its_help():
    import dataclasses

    from dragkit.config import METHODS, field_help

    r = subprocess.run([sys.executable, "-m", "dragkit", "edit", "--fields"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    for cls in METHODS.values():
        for f in dataclasses.fields(cls):
            assert f"  {f.name} = " in r.stdout and field_help(cls)[f.name] in r.stdout
