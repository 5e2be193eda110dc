"""The regression check of a run against a reference run, and writing references."""
