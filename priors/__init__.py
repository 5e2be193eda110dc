"""Normalizing-flow priors (the G of both papers).

``base.py`` fixes the interface every prior implements (:class:`~bench.priors.base.FlowPrior`); one file per
architecture registers itself in :data:`~bench.priors.base.ARCHS`.
"""
