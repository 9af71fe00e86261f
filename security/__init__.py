"""security: 国密 SM2/SM3/SM4 primitives, keys, the sealed envelope, trust store and replay guard.

Knows nothing of HTTP, mappings or storage engines.
"""
