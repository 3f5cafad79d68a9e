"""Every subcommand of the lazy CLI table resolves to a config class and a function taking it."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from gags.cli import COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_resolves_to_its_config_and_function(name):
    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    config = getattr(module, command.config)
    function = getattr(module, command.function)
    assert dataclasses.is_dataclass(config), name
    assert len(inspect.signature(function).parameters) == 1, name
