"""Analyses of runs and models: hidden-state drift, training trajectories and speed scaling.

Each has a function API that works on models in memory (``drift.drift``,
``trajectory.trajectory``, ``bench.scaling``) and a command in :mod:`.cli` that reads runs from
disk and writes a CSV and a PNG.
"""
