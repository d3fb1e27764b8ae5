"""Command-line flags and config files generated from config dataclasses.

``ArgumentParser`` is HF's ``HfArgumentParser`` (the convention TRL and ``transformers`` users know:
one flag per dataclass field, ``--field_name`` and ``--field-name``, help and default from the field)
plus what goldfish's commands need on top of it:

- ``--config FILE`` (YAML, JSON or TOML; keys are field names or the aliases below without dashes):
  defaults <- ``--preset`` <- the file <- command-line flags. Values from a file go through the same
  type conversion and choice check as flags.
- aliases: extra spellings of a flag (``--lr`` for ``--learning_rate``); switches: a flag that sets a
  field to a fixed value (``--sequential`` = ``--train_sampling_strategy sequential``).
- list fields with ``metadata={"repeatable": True}`` take one or more values per use and may be
  repeated (``--data a --data b``); a use on the command line replaces the file's list.
- field metadata ``{"argparse": {...}}`` overrides attributes of the generated argparse action.
- field metadata ``{"flag": NAME}``: the field's flag, config key and settings name is NAME (two
  groups may then hold fields of one name); ``{"flag": None}``: the field is no setting (no flag).
- ``tuple[X, ...]`` fields take values as ``list[X]`` fields do (the dataclass makes them a tuple).
- dict-typed fields (and other non-scalar types) take JSON on the command line.

``parse(argv)`` returns the dataclass instances and the other (non-dataclass) arguments.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import enum
import json
import types
import typing
from pathlib import Path

from transformers import HfArgumentParser


OUR_METADATA = ("repeatable", "argparse", "flag", "resume")  # field metadata goldfish reads; HF passes the rest to argparse


def setting_name(f: dataclasses.Field) -> str | None:
    """The flag, config key and settings name of a field (``metadata["flag"]``, else its name); None: no setting."""
    return f.metadata.get("flag", f.name) if f.init else None


def setting_fields(cls) -> list[tuple[dataclasses.Field, str]]:
    """(field, ``setting_name``) of each field of the dataclass ``cls`` (or instance) that is a setting."""
    return [(f, name) for f in dataclasses.fields(cls) if (name := setting_name(f)) is not None]


def settings_of(instance) -> dict:
    """The settings of a dataclass instance as plain data, keyed by ``setting_name`` (tuples as lists):
    what ``ArgumentParser.apply`` (a ``--config`` file) reads back to the same instance."""
    values = {name: getattr(instance, f.name) for f, name in setting_fields(instance)}
    return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}


class _Repeatable(argparse.Action):
    """Each use appends its values; the first use of a parse replaces the default (a config file's list)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_repeatable_seen", set())
        items = list(getattr(namespace, self.dest) or []) if self.dest in seen else []
        seen.add(self.dest)
        items.extend(values if isinstance(values, list) else [values])
        setattr(namespace, self.dest, items)


def _json_type(cls):
    """Argparse type for a non-scalar field: JSON text -> value (a dict becomes ``cls(**dict)`` for classes)."""

    def parse(text: str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"expected JSON, got {text!r} ({e.msg})") from None
        if isinstance(cls, type) and cls is not dict and isinstance(value, dict):
            return cls(**value)
        return value

    parse.__name__ = "JSON"
    return parse


def _is_json(action) -> bool:
    return getattr(action.type, "__name__", "") == "JSON"


def _flag_text(item, json_ok: bool, name: str, source: str) -> str:
    """A config file's value as the flag's text: strings as they are, booleans as true/false, numbers
    as written, mappings and lists as JSON where the flag takes JSON (``json_ok``); anything else (a
    TOML date, a list inside a list) is refused."""
    if isinstance(item, str):
        return item
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (int, float)):
        return repr(item)
    if isinstance(item, (dict, list)) and json_ok:
        return json.dumps(item)
    raise ValueError(f"{source}: {name}: {item!r} ({type(item).__name__}) is no setting value; write a string, number, "
                     "boolean or list")


def read_config_file(path: str) -> dict:
    """The top-level mapping of a YAML (.yaml/.yml), JSON (.json) or TOML (.toml) file; ValueError otherwise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"--config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not UTF-8 text") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ValueError("use a .yaml, .yml, .json or .toml file")
    except ValueError as e:  # JSON, TOML and YAML errors are ValueErrors or carry a message
        raise ValueError(f"--config {path}: {e}") from None
    except Exception as e:  # yaml.YAMLError
        raise ValueError(f"--config {path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: the file must hold a mapping of settings, got {type(data).__name__}")
    return data


class ArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` with config files, presets, aliases, switches and repeatable lists (module docstring).

    aliases: {"--alias": "--canonical_flag"}; switches: {"--flag": (field name, value, help)};
    presets: {name: {field: value}} (``--preset NAME``, applied before the config file).
    """

    def __init__(self, dataclass_types, *, aliases: dict | None = None, switches: dict | None = None,
                 presets: dict | None = None, config: bool = True, removed: dict | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # 150 flags: a prefix must never silently pick one
        super().__init__(dataclass_types, **kwargs)
        self.presets = presets or {}
        self.config = config
        self.removed = removed or {}  # field names that are gone -> what to give instead (an error, flag or config key)
        self._fields = {name for dtype in self.dataclass_types for _, name in setting_fields(dtype)}
        self._actions_by_dest = {}
        for a in self._actions:  # a field's own flag comes first (a bool's --no_ complement after it)
            if a.dest in self._fields:
                self._actions_by_dest.setdefault(a.dest, a)
        for alias, canonical in (aliases or {}).items():
            action = self._option_string_actions[canonical]
            action.option_strings.append(alias)
            self._option_string_actions[alias] = action
        for flag, (dest, value, help_text) in (switches or {}).items():
            self.add_argument(flag, dest=dest, action="store_const", const=value, default=argparse.SUPPRESS, help=help_text)
        if config:
            self.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                              help="YAML, JSON or TOML file of settings (field names as keys); flags override it")
        if self.presets:
            self.presets = {"default": {}, **self.presets}
            self.add_argument("--preset", choices=list(self.presets), default=argparse.SUPPRESS,
                              help="a named set of settings, applied before --config and the flags")

    @staticmethod
    def _parse_dataclass_field(parser, f: dataclasses.Field) -> None:
        """HF's flag for the field (under ``setting_name``), then: repeatable lists, JSON types,
        ``metadata["argparse"]`` overrides."""
        if (name := setting_name(f)) is None:
            return
        ours = {k: f.metadata[k] for k in OUR_METADATA if k in f.metadata}
        declared = f.type
        f = copy.copy(f)  # HF rewrites field.type in place
        f.name = name
        f.metadata = types.MappingProxyType({k: v for k, v in f.metadata.items() if k not in ours})
        if typing.get_origin(declared) is tuple and typing.get_args(declared)[1:] == (Ellipsis,):
            f.type = list[typing.get_args(declared)[0]]
        HfArgumentParser._parse_dataclass_field(parser, f)
        action = next(a for a in parser._actions if a.dest == f.name)
        if action.default is None and f.default not in (None, dataclasses.MISSING):
            action.default = argparse.SUPPRESS  # HF drops the plain default of a list-typed field: let the dataclass apply it
        if set(typing.get_args(declared)) - {type(None)} == {str, bool}:
            action.type, action.nargs, action.const = str, None, None  # "str | bool": HF's parser keeps only bool
        # a config file may give a list or a mapping where the field's type admits one (HF's "None | str |
        # list[str]", "dict | str | None": a mapping is then its JSON text, as the flag takes it)
        options = {typing.get_origin(a) or a for a in (declared, *typing.get_args(declared))}
        action.takes_list, action.takes_dict = action.nargs in ("+", "*") or list in options, dict in options
        if ours.get("repeatable"):
            action.__class__ = _Repeatable
        if getattr(action.type, "__name__", "") == "string_to_bool" and action.nargs is None:
            action.nargs, action.const = "?", True  # an optional bool (default None) takes a bare flag too
        t = action.type
        if isinstance(t, types.GenericAlias) or (isinstance(t, type) and t not in (int, float, str) and not issubclass(t, enum.Enum)):
            action.type = _json_type(t)
        for key, value in ours.get("argparse", {}).items():
            setattr(action, key, value)

    def _config_key(self, key: str, source: str) -> str:
        """The field a config key names (a field name, or an alias or flag without its dashes)."""
        if key in self._fields:
            return key
        action = self._option_string_actions.get("--" + key) or self._option_string_actions.get("--" + key.replace("_", "-"))
        if action is not None and action.dest in self._fields:
            return action.dest
        if key.replace("-", "_") in self.removed:
            raise ValueError(f"{source}: {key}: {self.removed[key.replace('-', '_')]}")
        close = difflib.get_close_matches(key, list(self._fields), n=3)
        raise ValueError(f"{source}: unknown setting {key!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))

    def _convert(self, name: str, value, source: str):
        """A config value through its flag's checks: each value as the text a flag would give
        (``_flag_text``), then the flag's type conversion and choice check; a list only where the
        flag takes several values."""
        action = self._actions_by_dest[name]
        if value is None:
            return None
        several = action.nargs in ("+", "*") or (isinstance(value, list) and action.takes_list)
        if isinstance(value, list) and not several and not _is_json(action):
            raise ValueError(f"{source}: {name}: takes one value, got the list {value!r}")
        items = value if isinstance(value, list) and several else [value]
        converted = [self._convert_one(action, name, _flag_text(item, _is_json(action) or action.takes_dict, name, source), source) for item in items]
        return converted if several else converted[0]

    @staticmethod
    def _convert_one(action, name: str, text: str, source: str):
        try:
            item = text if action.type is None else action.type(text)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{source}: {name}: {e}") from None
        except (TypeError, ValueError):  # worded as argparse words it for a flag
            raise ValueError(f"{source}: {name}: invalid {getattr(action.type, '__name__', 'type')} value: {text!r}") from None
        if action.choices is not None and item not in action.choices:
            raise ValueError(f"{source}: {name}: {item!r} is not one of {', '.join(map(str, action.choices))}")
        return item

    def apply(self, values: dict, source: str) -> None:
        """Set defaults from ``values`` (a preset or a config file), checked and converted like flags."""
        for key, value in values.items():
            name = self._config_key(key, source)
            self.set_defaults(**{name: self._convert(name, value, source)})

    def parse(self, argv: list[str]) -> tuple[tuple, argparse.Namespace]:
        """(dataclass instances in the order given, the other (non-dataclass) arguments)."""
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        pre.add_argument("--preset")
        known, _ = pre.parse_known_args(argv)
        for arg in argv:
            name = arg.split("=", 1)[0].removeprefix("--").replace("-", "_")
            if arg.startswith("--") and name in self.removed:
                self.error(f"{arg.split('=', 1)[0]}: {self.removed[name]}")
        if known.preset is not None and known.preset in self.presets:
            self.apply(self.presets[known.preset], f"--preset {known.preset}")
        if self.config and known.config is not None:
            self.apply(read_config_file(known.config), f"--config {known.config}")
        namespace = self.parse_args(argv)
        values = vars(namespace)
        values.pop("_repeatable_seen", None)
        values.pop("config", None)
        values.pop("preset", None)
        fields = {name: values.pop(name) for name in self._fields if name in values}
        instances = tuple(dtype(**{f.name: fields[name] for f, name in setting_fields(dtype) if name in fields})
                          for dtype in self.dataclass_types)
        return instances, namespace


def field_like(cls, name: str, **changes) -> dataclasses.Field:
    """A new field with the default and metadata of ``cls``'s field ``name`` (``changes`` update the metadata),
    so a setting that appears in two config groups is defined once."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    metadata = {**f.metadata, **changes}
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=metadata)
    return dataclasses.field(default=f.default, metadata=metadata)

