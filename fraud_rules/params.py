"""Detector parameters: one versioned TOML file (default_params.toml ships with meterseal and
documents each default's reasoning). A file given by an officer overrides any subset of it and
must state its own ``version``, which every finding records, so an alert says under which
parameters it was raised.
"""

import tomllib
from importlib import resources
from pathlib import Path

SCHEMA = 1
_DEFAULT_FILE = "default_params.toml"


class ParamsError(ValueError):
    """A parameters file that cannot be used; the message names the file and the key."""


class Params:
    def __init__(self, version, sections, sources):
        self.version = version
        self._sections = sections
        self.sources = sources

    def section(self, name):
        try:
            return self._sections[name]
        except KeyError:
            raise ParamsError(f"no parameters for detector {name!r} in "
                              f"{', '.join(self.sources)}") from None

    def sections(self):
        return dict(self._sections)


def _read(text, where):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"{where}: not valid TOML: {exc}") from None
    if data.get("schema") != SCHEMA:
        raise ParamsError(f"{where}: 'schema' must be {SCHEMA}, got {data.get('schema')!r}")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise ParamsError(f"{where}: 'version' must be a non-empty string naming this file's "
                          "revision (it is recorded with every finding)")
    sections = {name: value for name, value in data.items() if name not in ("schema", "version")}
    for name, value in sections.items():
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: {name!r} must be a table of a detector's parameters")
    return version, sections


def _same_type(default, value):
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(default) is type(value)


def load_params(path=None):
    """The packaged defaults, overridden by the file at ``path`` when given."""
    text = resources.files(__package__).joinpath(_DEFAULT_FILE).read_text(encoding="utf-8")
    version, sections = _read(text, _DEFAULT_FILE)
    sources = [_DEFAULT_FILE]
    if path is None:
        return Params(version, sections, sources)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"cannot read parameters file {path}: {exc}") from None
    version, overrides = _read(text, str(path))
    merged = {name: dict(values) for name, values in sections.items()}
    for name, values in overrides.items():
        if name not in merged:
            raise ParamsError(f"{path}: unknown detector [{name!r}]; known: "
                              + ", ".join(sorted(merged)))
        for key, value in values.items():
            if key not in merged[name]:
                raise ParamsError(f"{path}: [{name!r}] has no parameter {key!r}; it has "
                                  + ", ".join(sorted(merged[name])))
            default = merged[name][key]
            if not _same_type(default, value):
                raise ParamsError(f"{path}: [{name!r}] {key} must be a "
                                  f"{type(default).__name__}, like the default {default!r}")
            merged[name][key] = value
    return Params(version, merged, sources + [str(path)])
