"""Generated cultures and the end-to-end demo."""

from ._run import demo, make_demo_data
from ._synthetic import CELL_TYPES, CellType, synthetic_culture

__all__ = ["CELL_TYPES", "CellType", "demo", "make_demo_data", "synthetic_culture"]
