"""A2O-Synth internals: scene rendering (:mod:`.render`), deterministic writers (:mod:`.io`) and
reading a generated directory (:mod:`.reader`).

The public API (parameters, presets, generation, reading, statistics) is :mod:`a2o.data.synthetic`.
"""
