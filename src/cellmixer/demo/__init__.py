"""Generated cultures and the end-to-end demo."""

from ._run import DEMO_FOREGROUND, demo, make_demo_data, print_demo_report
from ._synthetic import CELL_TYPES, CellType, synthetic_culture, synthetic_nuclear_stain

__all__ = [
    "CELL_TYPES",
    "CellType",
    "DEMO_FOREGROUND",
    "demo",
    "make_demo_data",
    "print_demo_report",
    "synthetic_culture",
    "synthetic_nuclear_stain",
]
