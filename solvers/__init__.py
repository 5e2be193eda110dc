"""MAP solvers. ``base.py`` holds the contract; every other module registers one solver family."""
