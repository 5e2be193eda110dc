"""Image datasets. Loaded as ``bench.datasets`` (never as a top-level ``datasets`` package).

``base.py`` holds the registry and the :class:`~bench.datasets.base.ImageSet` every loader returns; one file per
source registers itself.
"""
