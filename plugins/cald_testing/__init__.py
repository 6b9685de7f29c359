"""Tiny offline workspaces of the built-in plugins, for tests, scripts and benchmarks.

Not a plugin (no entry point registers it): it builds small models of the built-in source
families (BERT, GPT-NeoX, wav2vec2) with random weights, the work directories that specs run
in, and step-by-step references of the built-in mixers. What names no family or mixer is in
:mod:`cald_framework.testing`.
"""
