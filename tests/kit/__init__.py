"""Helpers shared by the tests: grids and checkpoints written to tmp folders, synthetic runs, test solvers, the
task and prior contracts, the cheats."""
