"""Offline stand-ins shared by tests, scripts and benchmarks; nothing here names a model family
or a mixer.

``text`` (a word-level tokenizer, made-up reviews), ``audio`` (sine tones), ``engine`` (a tiny
float64 model, task and data set for the engine) and ``toy_plugins`` (registries of known toy
plugins for spec validation). The tiny workspaces of the built-in plugins (small models of their
families, with data and specs) are in the ``cald_testing`` package beside the plugins.
"""
