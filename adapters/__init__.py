"""adapters: the only code that speaks to outside systems (partners, back office, Redis)."""
