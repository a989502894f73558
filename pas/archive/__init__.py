"""Archival storage planning (the paper's PAS-MT / PAS-PT, whole vs delta per
matrix under a recreation budget): issue 6. Nothing here yet."""
