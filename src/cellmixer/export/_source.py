"""The self-contained source of an exported network: the package's own modules, joined into one file
that imports nothing but torch (a bioimage.io package's architecture file)."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

from .._version import __version__
from ..models import _padding, _typed_unet, _unet
from . import _network

# In dependency order: each module's package imports are the names the ones before it define.
SOURCE_MODULES: tuple[ModuleType, ...] = (_padding, _unet, _typed_unet, _network)


def _module_body(module: ModuleType) -> str:
    """The module's source without its docstring, ``from __future__`` line and package-relative imports."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    drop = set()
    for index, node in enumerate(tree.body):
        docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        relative = isinstance(node, ast.ImportFrom) and (node.level > 0 or node.module == "__future__")
        if docstring or relative:
            drop.update(range(node.lineno, node.end_lineno + 1))
    lines = source.splitlines()
    kept = [line for number, line in enumerate(lines, start=1) if number not in drop]
    return "\n".join(kept).strip() + "\n"


def network_source() -> str:
    """One Python file defining :class:`ExportedNetwork` and the networks it wraps; it needs torch only.

    >>> namespace = {}
    >>> exec(compile(network_source(), "network.py", "exec"), namespace)
    >>> sorted(namespace["NETWORKS"])
    ['typed_unet', 'unet']
    """
    parts = [f'"""cellmixer {__version__}: the network of an exported model, with its input normalization, input '
             'scale\nand output activation (generated from the cellmixer source; needs only torch)."""\n\n'
             "from __future__ import annotations\n"]
    for module in SOURCE_MODULES:
        parts.append(f"\n# --- {module.__name__} " + "-" * max(0, 100 - 7 - len(module.__name__)) + "\n\n")
        parts.append(_module_body(module))
    return "".join(parts)
