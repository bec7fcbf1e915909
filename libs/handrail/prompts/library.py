"""Prompt files: ``config/prompts/<name>/<version>.md`` (or ``.txt``).

Versions are files, reviewed and versioned in git like any contract; which one
is active is decided at run time (``handrail.prompts.store``). A file is read
again only when it changed on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from handrail.prompts.errors import PromptNotFound
from handrail.prompts.template import PromptTemplate, version_sort_key

#: The suffixes a prompt file may have, in the order they are looked for.
SUFFIXES = (".md", ".txt")
#: Names and versions become path parts and Redis key parts: keep them plain.
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def parse_ref(ref: str) -> tuple[str, str]:
    """``name@version`` -> ``(name, version)``, or PromptNotFound saying what is wrong."""
    name, sep, version = ref.partition("@")
    if not sep or not _PLAIN.match(name) or not _PLAIN.match(version):
        raise PromptNotFound(f"prompt reference {ref!r} is not of the form name@version")
    return name, version


class PromptLibrary:
    """The prompt files under one directory (``<config_dir>/prompts``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[int, PromptTemplate]] = {}

    def names(self) -> list[str]:
        """Every prompt with at least one version file."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """The versions of prompt ``name``, oldest first (natural order)."""
        folder = self.root / name
        if not _PLAIN.match(name) or not folder.is_dir():
            return []
        stems = {p.stem for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES and _PLAIN.match(p.stem)}
        return sorted(stems, key=version_sort_key)

    def path(self, name: str, version: str) -> Path:
        """The file of ``name@version``, or PromptNotFound listing the versions there are."""
        if _PLAIN.match(name) and _PLAIN.match(version):
            for suffix in SUFFIXES:
                candidate = self.root / name / f"{version}{suffix}"
                if candidate.is_file():
                    return candidate
        known = self.versions(name)
        if not known:
            raise PromptNotFound(f"no prompt {name!r} under {self.root} (prompts there: {self.names()})")
        raise PromptNotFound(f"prompt {name!r} has no version {version!r} under {self.root / name} (versions: {known})")

    def load(self, name: str, version: str) -> PromptTemplate:
        """The checked template of ``name@version`` (PromptNotFound, PromptTemplateError)."""
        path = self.path(name, version)
        mtime_ns = path.stat().st_mtime_ns
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime_ns:
            return cached[1]
        template = PromptTemplate(name, version, path.read_text(encoding="utf-8"), source=path)
        self._cache[path] = (mtime_ns, template)
        return template
