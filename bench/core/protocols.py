"""The named protocols of a run: how every solver steps and starts. One declaration each; a grid picks one with
``protocol = "..."`` (default :data:`DEFAULT`), it is part of every unit's identity and every row, and the
leaderboard header names it.

A protocol does not add code paths: it selects parameter values that the solvers declare themselves
(:class:`bench.core.registry.Param` ``protocols``; the default protocol's values are the declared defaults). A value
given in a grid's solver spec (``aipo[alpha=0.01]``) or by ``--tuned`` wins over the protocol's.
"""
from __future__ import annotations

from bench.core.errors import UserError

PROTOCOLS = {
    "robust": ("the harness's protocol, under which more budget does not hurt: every x-space Adam step decays as "
               "alpha*tau/(tau + t) (tau = 100 passes), the MLE x*(0) is projected Adam on the projected gradient, "
               "AIPO's first round is sized to the budget, Alg. 1 steps by Adam, Lasso's alpha follows the "
               "universal threshold"),
    "paper": ("the papers' settings: constant Adam step alpha = 0.05 for every method (AIPO sec. 4.1 / Table 4, "
              "K = 40), the MLE by projected gradient ascent (App. A), Alg. 1 by GD with 1/L steps, Lasso alpha = "
              "0.01 (Asim et al. fn. 1)"),
}
DEFAULT = "robust"


def check_protocol(name) -> str:
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return name
