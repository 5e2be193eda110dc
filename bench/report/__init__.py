"""Rows to results: statistics, tables, figures, the Markdown and HTML leaderboards, compare, export."""
