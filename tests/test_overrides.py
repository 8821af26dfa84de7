"""expkit.overrides: override strings read and written with Hydra's parser, in one place."""

from __future__ import annotations

import ast
import math
import shlex
import subprocess
import sys

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from expkit import overrides
from expkit.cli import expand_shorthands
from expkit.errors import ExpkitError
from expkit.redact import REDACTED, redact_override
from expkit.resume import resume_command
from expkit.sweeps.sweep import _plain
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("item", "key", "element", "written", "text"),
    [
        ("a.b=1", "a.b", "a.b", "1", "1"),
        ("+a.b=", "a.b", "+a.b", "", ""),
        ("++a.b=x", "a.b", "++a.b", "x", "x"),
        ("~a.b", "a.b", "~a.b", None, None),
        ("~a.b=3", "a.b", "~a.b", "3", "3"),
        ("a=null", "a", "a", "null", "null"),
        ("a='x: y=1, z'", "a", "a", "'x: y=1, z'", "x: y=1, z"),
        ('a="it\'s"', "a", "a", '"it\'s"', "it's"),
        ("a='q\\'t'", "a", "a", "'q\\'t'", "q't"),
        ("a=x\\,y", "a", "a", "x\\,y", "x,y"),
        ("a=x\\ y", "a", "a", "x\\ y", "x y"),
        ("a=sqlite\\:////tmp/m.db", "a", "a", "sqlite\\:////tmp/m.db", "sqlite:////tmp/m.db"),
        ("a=hello world", "a", "a", "hello world", "hello world"),
        ("a=1e-3", "a", "a", "1e-3", "1e-3"),  # a number as typed, not as Python prints it
        ("a=[1,'b c']", "a", "a", "[1,'b c']", "[1,'b c']"),
        ("a=${b.c}", "a", "a", "${b.c}", "${b.c}"),  # an interpolation is the config's value
        ("a=str(1)", "a", "a", "str(1)", "1"),
        ("a=1,2", "a", "a", "1,2", "1,2"),
        ("a='x','y z'", "a", "a", "'x','y z'", "'x','y z'"),  # a sweep stays as written
        ("a=range(1,5)", "a", "a", "range(1,5)", "range(1,5)"),
        ("model=glob(*)", "model", "model", "glob(*)", "glob(*)"),
        ("hydra/launcher=joblib", "hydra/launcher", "hydra/launcher", "joblib", "joblib"),
        ("model@pkg=tiny", "model", "model@pkg", "tiny", "tiny"),
    ],
)
def test_an_override_read_with_hydras_grammar(item, key, element, written, text):
    assert overrides.key(item) == key
    assert overrides.key_element(item) == element
    assert overrides.value_as_written(item) == written
    assert overrides.value_text(item) == text
    assert overrides.has_value(item) is (written is not None)
    assert overrides.plain(item) == (item if text is None else f"{element}={text}")


@pytest.mark.parametrize(
    ("item", "sweep"),
    [("a=1,2", True), ("a=range(3)", True), ("a=choice(1,2)", True), ("a=glob(*)", True),
     ("a=interval(0,1)", True), ("a='1,2'", False), ("a=1\\,2", False), ("a=[1,2]", False),
     ("a=1", False), ("~a", False), ("-m", False)],
)  # fmt: skip
def test_sweeps_are_told_from_values_with_commas(item, sweep):
    assert overrides.is_sweep(item) is sweep


def test_hydras_own_settings_and_sections():
    assert overrides.is_hydra("hydra.run.dir=x") and overrides.is_hydra("hydra/launcher=joblib")
    assert overrides.is_hydra("+hydra.job.chdir=true")
    assert not overrides.is_hydra("hydra_like.key=1") and not overrides.is_hydra("model=tiny")
    assert overrides.section("resume.checkpoint=auto") == "resume"
    assert overrides.section("~resume.allow_changes") == "resume"
    assert overrides.section("resumed=1") == "resumed"


@pytest.mark.parametrize("item", ["--cfg", "-m", "job", "a=b=c", "a='open", "-cn"])
def test_what_hydra_cannot_read_is_no_override_and_never_raises(item):
    assert not overrides.is_override(item) and not overrides.is_sweep(item)
    overrides.key(item), overrides.value_text(item), overrides.plain(item)  # no exception


def test_a_record_that_is_not_an_override_splits_at_its_first_equals():
    # a value shown plain (a space, an unescaped colon, an `=` in it) is no override any more
    item = "model.cache_dir=/tmp/hub a: b=1"
    assert not overrides.is_override(item)
    assert overrides.key(item) == "model.cache_dir"
    assert overrides.value_text(item) == "/tmp/hub a: b=1"
    assert overrides.key("+x=a=b") == "x" and overrides.key_element("+x=a=b") == "+x"
    assert overrides.value_text("no_equals") is None


def test_parse_raises_hydras_error_for_the_command_line():
    from hydra.errors import HydraException

    parsed = overrides.parse(["+a=1", "~b", "c=1,2"])
    assert [o.type.name for o in parsed] == ["ADD", "DEL", "CHANGE"]
    assert parsed[2].is_sweep_override()
    with pytest.raises(HydraException):
        overrides.parse(["a=b=c"])


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "null"), (True, "True"), (3, "3"), (2.5e-05, "2.5e-05"), (math.inf, "inf"),
     ("plain", "plain"), ("REDACTED", "REDACTED"), ("42", "'42'"), ("null", "'null'"),
     ("true", "'true'"), ("a,b", "'a,b'"), ("x y", "'x y'"), (" x", "' x'"),
     ("it's a \\ path", "'it\\'s a \\ path'"), ("ends in \\", "'ends in \\\\'"),
     ("str(1)", "'str(1)'"), ("", ""), ([1, "a b"], "[1,'a b']"), ({"x": "1"}, "{x:'1'}"),
     ({}, "{}")],
)  # fmt: skip
def test_values_written_for_hydra_read_back_equal(value, shown):
    assert overrides.value_string(value) == shown
    (parsed,) = overrides.parse([overrides.format("++k", value)])
    assert parsed.value() == value and parsed.get_key_element() == "++k"


def test_a_value_that_is_no_config_value_is_an_error():
    with pytest.raises(ExpkitError, match="cannot express"):
        overrides.value_string(object())


def test_a_record_of_overrides_joined_with_spaces_splits_back():
    typed = ["a='x: y=1, z'", "b=hello world", "g=two  spaces", "~c", "d=[1, 2]", "e=1,2"]
    assert overrides.split(" ".join(typed)) == typed
    (job,) = BasicSweeper.split_arguments(overrides.parse(typed[:4]), None)[0]
    assert overrides.split(" ".join(job)) == job  # as a sweep's job gets them: escaped
    assert overrides.split("") == [] and overrides.split("junk a=1") == ["junk", "a=1"]
    assert overrides.split("a=1 junk") == ["a=1 junk"]  # what follows a value is part of it


def test_the_callers_use_it():
    assert redact_override("+model.hub_token='a b'") == f"+model.hub_token={REDACTED}"
    assert redact_override("~model.hub_token") == "~model.hub_token"  # deletes: nothing secret
    assert redact_override("x.password=a=b") == f"x.password={REDACTED}"  # not an override
    assert _plain(["a=1", "resume=auto", "+resume.allow_changes=[x]", "resumed=1"]) == [
        "a=1", "resumed=1",
    ]  # fmt: skip
    command = shlex.split(resume_command(["a='x y'", "resume.checkpoint=auto"], ROOT))
    assert command == ["expkit", "a='x y'", f"hydra.run.dir={ROOT}", "resume=auto"]
    assert expand_shorthands(["resume='/a b'", "~resume", "resumes=1", "-m"]) == [
        "resume.checkpoint='/a b'", "~resume", "resumes=1", "-m",
    ]  # fmt: skip


def test_a_run_name_shows_values_as_the_config_holds_them(make_cfg):
    from expkit.run import run_name

    cfg = make_cfg()
    items = [
        "optimizer.lr=1e-3", "model.cache_dir='/a b'", "hydra.run.dir=x", "~trainer.foo",
        "hydra/launcher=joblib", "data.path=/d", "+tracking.uri=sqlite\\:////x.db",
    ]  # fmt: skip
    assert run_name(cfg, items) == "lr=1e-3 cache_dir=/a b uri=sqlite:////x.db"
    assert run_name(cfg, ["hydra.run.dir=x"]) == str(cfg.data.name)


def test_the_run_engine_does_not_import_the_sweep():
    """expkit.sweeps sits on top of expkit.run: run.py never imports it, not even in a function."""
    tree = ast.parse((ROOT / "expkit" / "run.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "expkit.sweeps.sweep" not in imported and "expkit.cli" not in imported
    probe = "import sys, expkit.run; print(sorted(m for m in sys.modules if 'sweeps' in m))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"
