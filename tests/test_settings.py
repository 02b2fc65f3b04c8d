"""Each default is stated once, in measure.settings: ``measure run``'s flags, the pytest plugin's
``--measure-*`` options (under the ``suite`` profile), the engine's configuration, the live page
and the conditions all take it from there, and each least value is checked in one place."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from measure import cli
from measure.engine.conditions import CONDITION_NAMES, CONDITIONS, STRATEGIES, build_conditions
from measure.engine.engine import EngineConfig
from measure.pytest_plugin import options as plugin_options
from measure.serve import requests as live_page
from measure.settings import DEFAULTS, FIELDS, PROFILES, RunSettings, SettingsError, check_bounds, profile


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli.add_run_parser(parser.add_subparsers())
    return parser


def test_measure_run_has_a_flag_for_every_setting_and_sets_only_what_is_given():
    parser = run_parser()
    assert vars(parser.parse_args(["run"])).keys() == {"func"}
    given = vars(parser.parse_args(["run", "--update-gap", "4", "--no-attention", "--points", "3,0.5",
                                    "--limit", "all"]))
    assert {k: v for k, v in given.items() if k != "func"} == {"update_gap": 4, "attention": False,
                                                               "points": ["3", "0.5"], "limit": None}
    flags = {option for action in parser._subparsers._group_actions[0].choices["run"]._actions
             for option in action.option_strings}
    assert {f"--{name.replace('_', '-')}" for name in FIELDS} <= flags


def test_the_plugin_options_are_the_settings_flags_with_a_prefix_under_the_suite_profile():
    parser = argparse.ArgumentParser()

    class Group:
        def addoption(self, *args, **kwargs):
            parser.add_argument(*args, **kwargs)

    class Parser:
        def getgroup(self, *args):
            return Group()

    plugin_options.add_options(Parser())
    values = vars(parser.parse_args([]))
    suite = profile("suite")
    assert {name: values[f"measure_{name}"] for name in plugin_options.OPTIONS} == \
        {name: suite[name] for name in plugin_options.OPTIONS}
    assert suite["points"] == ["6"] and suite["max_new_tokens"] == 24  # the named smaller workload
    assert set(PROFILES["suite"]) <= set(plugin_options.OPTIONS)
    assert vars(parser.parse_args(["--measure-no-attention", "--measure-limit", "all"]))["measure_attention"] is False


def test_the_engine_the_conditions_and_the_live_page_take_the_run_defaults():
    config = EngineConfig()
    shared = [f.name for f in dataclasses.fields(EngineConfig) if f.name in FIELDS and f.name != "points"]
    assert {name: getattr(config, name) for name in shared} == \
        {name: (tuple(v) if isinstance(v := getattr(DEFAULTS, name), list) else v) for name in shared}
    assert [point.label for point in config.points] == [point.label for point in DEFAULTS.injection_points()]
    assert tuple(DEFAULTS.points) == live_page.DEFAULT_POINTS
    assert tuple(DEFAULTS.conditions) == tuple(name for name in CONDITION_NAMES if name not in STRATEGIES)
    built = {type(c).name: c for c in build_conditions(list(CONDITIONS), DEFAULTS)}
    assert built["partial"].partial_recompute_last == DEFAULTS.partial_recompute_last
    assert (built["gradual"].update_gap, built["gradual"].gradual_pieces) == (DEFAULTS.update_gap,
                                                                            DEFAULTS.gradual_pieces)
    assert built["multi"].update_gap == DEFAULTS.update_gap and built["gradual_stream"].update_gap == 1


@pytest.mark.parametrize("name, value, message", [
    ("partial_recompute_last", 0, "--partial-recompute-last must be at least 1 (the next distribution needs a query)"),
    ("update_gap", 0, "--update-gap must be at least 1"),
    ("gradual_pieces", 1, "--gradual-pieces must be at least 2"),
    ("max_new_tokens", 1, "--max-new-tokens must be at least 2"),
    ("limit", 0, "--limit must be at least 1"),
])
def test_each_least_value_is_checked_once_for_the_flags_and_the_engine(name, value, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_bounds(RunSettings(**{name: value}))
    if name in {f.name for f in dataclasses.fields(EngineConfig)}:
        with pytest.raises(ValueError, match=f"{name} must be at least"):
            EngineConfig(**{name: value})


def test_points_are_parsed_once_per_value():
    settings = RunSettings(points=["4", "0.5"])
    first = settings.injection_points()
    assert settings.injection_points() is first and [p.label for p in first] == ["t4", "f0.5"]
    settings.points = ["4"]
    assert [p.label for p in settings.injection_points()] == ["t4"]
    assert "_parsed_points" not in settings.as_dict()
    with pytest.raises(SettingsError, match="--points: injection point"):
        RunSettings(points=["soon"]).injection_points()
