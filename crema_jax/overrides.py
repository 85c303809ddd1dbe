"""Command-line config overrides checked against the config before anything runs.

ml_collections applies `--config.a.b=v` while absl parses the flags; a field that does
not exist ends there in a long traceback (`KeyError: "'pretrain'"`). `check` walks each
override's path through the config first and says, in a few lines: the override, the
first part of its path the config lacks and the fields that do exist there, and the
closest field anywhere in the config with its full path.
"""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
from typing import Sequence

import ml_collections

PREFIX = "--config."


def load(argv: Sequence[str]) -> tuple[str, ml_collections.ConfigDict] | None:
  """(the `--config` argument, the config it names) from `argv`; None when absent or
  unloadable (absl then reports it as it does)."""
  spec = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
  if not spec:
    return None
  path, _, config_arg = spec.partition(":")
  try:
    module_spec = importlib.util.spec_from_file_location("_config_to_check", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(config_arg) if config_arg else module.get_config()
  except Exception:  # pylint: disable=broad-except
    return None
  return spec, config


def leaves(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every field's dotted path."""
  out = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    out.append(path)
    if isinstance(value, ml_collections.ConfigDict):
      out += leaves(value, path + ".")
  return out


def problem(config: ml_collections.ConfigDict, path: str) -> str | None:
  """What is wrong with overriding `path` of `config` (None: the field exists)."""
  node, parts = config, path.split(".")
  for depth, part in enumerate(parts):
    if isinstance(node, ml_collections.ConfigDict) and part in node:
      node = node[part]
      continue
    where = ".".join(parts[:depth]) or "the top level"
    if not isinstance(node, ml_collections.ConfigDict):
      return f"{where} is a value ({node!r}), not a group of fields"
    known = sorted(node.keys())
    near = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
    anywhere = difflib.get_close_matches(
        parts[-1], [p.rsplit(".", 1)[-1] for p in leaves(config)], n=1, cutoff=0.7)
    lines = [f"no field {part!r} at {where}"
             + (f": did you mean {'.'.join(parts[:depth] + near)}?" if near else "")]
    if anywhere and not near:
      found = [p for p in leaves(config) if p.rsplit(".", 1)[-1] == anywhere[0]]
      lines.append(f"closest field: {', '.join(PREFIX + p for p in found[:3])}")
    if not near and not anywhere:
      lines.append(f"fields at {where}: {', '.join(known)}")
    return "\n    ".join(lines)
  return None


def check(argv: Sequence[str]) -> str | None:
  """The message for every override of `argv` the config lacks (None: all exist)."""
  loaded = load(argv)
  if loaded is None:
    return None
  spec, config = loaded
  messages = []
  for arg in argv:
    if arg.startswith(PREFIX):
      path = arg[len(PREFIX):].split("=", 1)[0]
      found = problem(config, path)
      if found:
        messages.append(f"  {arg}\n    {found}")
  if not messages:
    return None
  return (f"unknown config field(s) for --config={spec}:\n" + "\n".join(messages)
          + f"\n(the fields are listed, with what each does, in "
          f"{spec.partition(':')[0]})")
