"""The methods, one folder each: ``cellmixer`` (cell types from homogeneous cultures), ``nuclei``
(nuclei from classical labels), ``centroids`` (cells from one point each) and ``typed`` (every cell
with its type). Each registers itself (:func:`cellmixer.engine.register_method`) when imported here."""

# The registry: one line per method.
from . import cellmixer, centroids, nuclei, typed  # noqa: E402,F401
