"""Opt-in lossy float schemes (float16, bfloat16, fixed point, k-bit coding
tables): issue 7. Nothing here yet; pas stores every tensor bit-exact."""
