"""Example pas codec plug-in: zlib (Python's standard library) as a chunk codec.

Importing this module registers the codec under the id ``example-zlib``;
``pas_configs.toml`` uses it in the ``pas-example-codec`` entry::

    [pas-example-codec]
    plugin = "bench.plugins.example_codec"
    codec = {id = "example-zlib", level = 6}

pas frames every chunk a plug-in codec encodes with tag 255 and the codec's
JSON config (``get_config()``), so a reader rebuilds the codec from the chunk
itself, provided this module was imported first (pas.codecs.unframe).
"""
from __future__ import annotations

import zlib

from pas import codecs
from pas.errors import IntegrityError


class ZlibCodec(codecs.Codec):
    codec_id = "example-zlib"

    def __init__(self, level: int = 6):
        self.level = int(level)
        if not 0 <= self.level <= 9:
            raise ValueError(f"zlib level must be 0..9, got {level}")

    def get_config(self):
        # Everything decoding needs (and that tells two configs apart) goes here:
        # it is written into every chunk this codec encodes.
        return {"id": self.codec_id, "level": self.level}

    def encode(self, data):
        return zlib.compress(data, self.level)

    def decode(self, data, size):
        try:
            return zlib.decompress(data, bufsize=max(size, 1))
        except zlib.error as exc:
            raise IntegrityError(f"zlib chunk does not decode: {exc}") from None


codecs.register(ZlibCodec)
