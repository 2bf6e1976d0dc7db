"""The CLI's parser takes its choices from their owners, and what the CLI decides lives in the API.

Each choice list of `monalisa`'s parser must equal the one its owning module defines (a second
copy would drift); the functions the CLI calls for entries, study options and the default run
work from Python with plain values, no argparse.
"""

import argparse

import numpy as np
import pytest
from PIL import Image

from monalisa import cli
from monalisa.data.images import DEFAULT_IMAGE, Target, builtin_path
from monalisa.engines import DEVICES, ENGINES
from monalisa.errors import UserError
from monalisa.experiments.compare import comparison_entries
from monalisa.experiments.studies import STUDIES, check_study_options
from monalisa.recipes.recipe import DEFAULT_PRESET, ORDERS, PRESETS, Recipe, get_preset
from monalisa.runs.directory import FRAME_SCHEDULES, FRAME_SPACINGS, RunDirectory
from monalisa.runs.lifecycle import run_target

# Each option with choices, by its dest, and the owner's list it must equal.
OWNERS = {"device": DEVICES, "engine": ENGINES, "frames": FRAME_SCHEDULES, "spacing": FRAME_SPACINGS,
          "order": ORDERS, "preset": list(PRESETS), "study": list(STUDIES)}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def choice_actions():
    """(command, dest, choices) for every option or positional of every subcommand that has choices."""
    for name, sub in subcommands(cli.build_parser()).items():
        for action in sub._actions:
            if action.choices is not None:
                yield name, action.dest, list(action.choices)


def test_every_choice_list_is_its_owners():
    found = list(choice_actions())
    assert {dest for _, dest, _ in found} == set(OWNERS)  # a new choice list needs an owner here
    for command, dest, choices in found:
        assert choices == list(OWNERS[dest]), f"monalisa {command} --{dest}"


def test_each_subcommand_runs_its_command_function():
    parsers = subcommands(cli.build_parser())
    assert list(parsers) == ["train", "compare", "study", "search", "images", "render", "neurons", "serve", "animate"]
    for name, parser in parsers.items():
        assert parser.get_default("handler") is getattr(cli, f"command_{name}")


# -- compare.comparison_entries --------------------------------------------------------------------

def test_entries_from_archs_take_the_default_preset():
    entries = comparison_entries(archs=["1x8", (8, 4)], overrides={"epochs": 2})
    base = get_preset(DEFAULT_PRESET)
    assert [recipe for _, recipe in entries] == [base.replace(arch=(8,), epochs=2),
                                                 base.replace(arch=(8, 4), epochs=2)]
    assert [label for label, _ in entries] == ["1x8-leaky_relu-sgd-b1", "8_4-leaky_relu-sgd-b1"]  # "," -> "_"


def test_entries_from_presets_files_and_recipes(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('arch = "2x8"\nepochs = 9\n')
    entries = comparison_entries(presets=["quick"], recipes=[path, Recipe(arch=(2,))], overrides={"seed": 7})
    assert [recipe for _, recipe in entries] == [PRESETS["quick"].replace(seed=7),
                                                 Recipe(arch=(8, 8), epochs=9, seed=7), Recipe(arch=(2,), seed=7)]


def test_a_repeated_entry_gets_a_suffix():
    labels = [label for label, _ in comparison_entries(archs=["1x8", "1x8", "1X8"])]
    assert labels == ["1x8-leaky_relu-sgd-b1", "1x8-leaky_relu-sgd-b1-2", "1x8-leaky_relu-sgd-b1-3"]


@pytest.mark.parametrize("kwargs, message", [
    ({"archs": ["1x8", "2x8"], "presets": ["quick", "fast"]}, "give one --preset with --arch"),
    ({"archs": ["1x8"]}, "give at least two recipes"),
    ({}, "give at least two recipes"),
    ({"archs": ["1x8", "2x8"], "overrides": {"arch": "3x8"}}, "drop 'arch'"),
    ({"presets": ["quick", "nope"]}, "unknown preset 'nope'"),
    ({"presets": ["quick", "fast"], "overrides": {"epoch": 3}}, "unknown recipe key 'epoch'"),
])
def test_entry_mistakes(kwargs, message):
    with pytest.raises(UserError, match=message):
        comparison_entries(**kwargs)


# -- studies.check_study_options -------------------------------------------------------------------

def test_study_options_each_study_takes():
    check_study_options("depth", {"budget": 50_000, "depths": (1, 2)})
    check_study_options("encodings", ["budget"], arch=(8, 8))
    check_study_options("tips", {})


@pytest.mark.parametrize("study, options, arch, message", [
    ("tips", {"budget": 1}, None, "--budget applies to the depth and encodings studies, not tips"),
    ("encodings", ["depths"], None, "--depths applies to the depth study, not encodings"),
    ("depth", {}, (4, 300), "drop --arch"),
    ("depth", {"budgt": 1}, None, "unknown option 'budgt' for the depth study"),
    ("width", {}, None, "unknown study 'width'"),
])
def test_study_option_mistakes(study, options, arch, message):
    with pytest.raises(UserError, match=message):
        check_study_options(study, options, arch)


# -- experiment.run_target -------------------------------------------------------------------------

def test_the_default_run_halves_the_built_in_image():
    with Image.open(builtin_path(DEFAULT_IMAGE)) as image:
        width, height = image.size
    target = run_target()
    assert target.name == DEFAULT_IMAGE
    assert (target.width, target.height) == (round(width / 2), round(height / 2))


def test_a_named_image_keeps_its_size_unless_told(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(path)
    assert (run_target(path).width, run_target(path).height) == (10, 6)
    assert (run_target(path, size=(5, 3)).width, run_target(path, size=(5, 3)).height) == (5, 3)
    default = run_target(scale=0.25)  # a scale alone: the built-in image at that scale, not half
    assert default.name == DEFAULT_IMAGE and default.width < run_target().width


# -- record.FRAME_SPACINGS -------------------------------------------------------------------------

def test_a_misspelt_spacing_is_an_error(tmp_path):
    target = Target(name="tiny", pixels=np.zeros((4, 4, 3), np.float32))
    run = RunDirectory.create(tmp_path / "run", Recipe(arch=(2,), epochs=1), target, {})
    run.unlock()
    with pytest.raises(UserError, match="unknown --spacing 'linear'; choose one of: even, log"):
        run.export_animation(tmp_path / "a.gif", spacing="linear")
