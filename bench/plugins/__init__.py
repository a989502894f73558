"""Codec plug-ins for pas configurations of the benchmark.

A plug-in is a module that registers a `pas.codecs.Codec` subclass with
`pas.codecs.register` when imported; a ``pas_configs.toml`` entry names it as
``plugin`` and selects the codec with ``codec = {id = ...}``. See
``example_codec.py`` and README.md, "Adding a scheme".
"""
