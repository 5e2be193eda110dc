"""Normalizing-flow priors (the G of both papers).

``base.py`` fixes the interface every prior implements (:class:`~bench.priors.base.FlowPrior`) and the size presets'
image shapes; one file per architecture — its hyper-parameters, the values of each size preset and the flow —
registers itself in :data:`~bench.priors.base.ARCHS`.
"""
