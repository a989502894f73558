"""Bit-exact delta encoding across versions (XOR, integer difference with
zigzag) and base selection: issue 3. Nothing here yet; every tensor is
stored whole (deduplicated by content)."""
