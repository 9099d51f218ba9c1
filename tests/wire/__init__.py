"""Tests of the sans-IO wire-format parsers, driven from byte chunks."""
