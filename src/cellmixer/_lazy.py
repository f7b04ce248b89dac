"""Modules imported on their first use: dask.array and zarr take over a second to import, and most
commands never touch them (only large images and OME-Zarr do)."""

from __future__ import annotations

import importlib


class lazy_import:  # noqa: N801 (used as a module)
    """Stands for the module ``name`` and imports it when one of its attributes is first used.

    Kept out of ``sys.modules`` on purpose: libraries that look at every loaded module (torch does at
    import) would otherwise import it at once.

    Examples
    --------
    >>> json = lazy_import("json")
    >>> json.dumps([1])
    '[1]'
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"
