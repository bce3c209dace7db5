"""Configuration with the k3s precedence: flags > EDGECTL_* env > config.yaml.

Keys in ``/etc/edgectl/config.yaml`` equal flag names (``data-dir: /x`` is
``--data-dir /x``); the environment variable for a flag is ``EDGECTL_`` plus
the flag name upper-cased with ``_`` for ``-`` (``EDGECTL_DATA_DIR``).

Commands opt in by using :class:`ConfigCommand` as their click ``cls``. The
file is validated once, before the command runs: an unknown key or a value
of the wrong type is a :class:`~edgectl.errors.ConfigError` naming file and key.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from .errors import ConfigError
from .paths import CONFIG_FILE

ENV_PREFIX = "EDGECTL_"
CONFIG_ENV = "EDGECTL_CONFIG"


def flag_name(param: click.Parameter) -> str | None:
    """The long flag name without dashes (``data-dir``), or None for arguments."""
    if not isinstance(param, click.Option):
        return None
    longs = [o for o in param.opts if o.startswith("--")]
    return longs[0][2:] if longs else None


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


MAX_CONFIG_BYTES = 1024 * 1024


class _FlagLoader(yaml.SafeLoader):
    """YAML as flag text: every scalar stays the string the user wrote.

    PyYAML would turn ``token: 0123`` into 83, ``https-listen-port: 1.5`` into a
    float that click truncates to 1, and ``token: yes`` into True; flags are
    text, so click converts the exact text instead (and rejects ``1.5``). Only
    ``null`` keeps its meaning. Duplicate keys are an error, not "last one wins".
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = key_node.value
            if isinstance(key_node, yaml.ScalarNode) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_small_text(path: Path, *, limit: int, what: str, error: type[Exception],
                    refuse_dirs: bool = False) -> str:
    """A UTF-8 file of at most ``limit`` bytes, or one ``error`` that names the
    file and calls it a ``what``. The read is bounded: /dev/zero or a 1 GiB
    file must not fill memory before we can say it is wrong."""
    try:
        if refuse_dirs and path.is_dir():
            raise error(f"{path}: is a directory, not a {what}")
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise error(f"{path}: larger than {limit // 1024} KiB; is this a {what}?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def read_file(path: Path) -> dict[str, Any]:
    """Parse a config file into a mapping, with errors that name the file."""
    text = read_small_text(path, limit=MAX_CONFIG_BYTES, what="config file", error=ConfigError)
    try:
        doc = yaml.load(text, Loader=_FlagLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply (or a recursive alias)") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level must be a mapping of flag names to values")
    return doc


def validate(command: click.Command, doc: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Check keys against the command's flags and convert values; return a default_map."""
    by_flag = {name: p for p in command.params if (name := flag_name(p)) and name != "config"}
    ctx = click.Context(command)
    result: dict[str, Any] = {}
    for key, value in doc.items():
        param = by_flag.get(str(key))
        if param is None:
            known = ", ".join(sorted(by_flag))
            raise ConfigError(f"{source}: unknown key {key!r} (valid keys: {known})")
        if value is None:
            raise ConfigError(f"{source}: key {key!r} has no value (remove the key to use the default)")
        if param.multiple and not isinstance(value, list):
            value = [value]
        if not param.multiple and isinstance(value, (list, dict)):
            raise ConfigError(f"{source}: key {key!r}: expected a single value, got a {type(value).__name__}")
        if param.multiple:
            for item in value:
                if item is None or isinstance(item, (list, dict)):
                    what = "nothing" if item is None else f"a {type(item).__name__}"
                    raise ConfigError(f"{source}: key {key!r}: expected a list of values, got {what} in it")
        try:
            if param.multiple:
                converted: Any = tuple(param.type.convert(v, param, ctx) for v in value)
            else:
                converted = param.type.convert(value, param, ctx)
        except click.BadParameter as exc:
            raise ConfigError(f"{source}: key {key!r}: {exc.message}") from None
        assert param.name is not None
        result[param.name] = converted
    return result


class NonEmptyPath(click.Path):
    """click turns ``--data-dir ""`` (an unset shell variable, usually) into ".":
    the server would then fill the current directory with its state."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("must not be empty (an unset shell variable?)", param, ctx)
        return super().convert(value, param, ctx)


class ConfigCommand(click.Command):
    """A click command whose options also come from EDGECTL_* env and config.yaml."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param.type) is click.Path:
                param.type.__class__ = NonEmptyPath
        self.params.append(
            click.Option(
                ["--config", "-c"],
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                expose_value=False,
                is_eager=True,
                help=f"Config file (keys are flag names). Default {CONFIG_FILE}, or ${CONFIG_ENV}.",
            )
        )
        for param in self.params:
            name = flag_name(param)
            if name and name != "config" and isinstance(param, click.Option):
                param.envvar = env_name(name)
                param.show_envvar = True

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        explicit = _explicit_config(args)
        path = explicit or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
        if path is None and CONFIG_FILE.exists():
            path = CONFIG_FILE
        if path is not None:
            extra.setdefault("default_map", validate(self, read_file(path), source=str(path)))
        return super().make_context(info_name, args, parent=parent, **extra)


def _explicit_config(args: list[str]) -> Path | None:
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None
