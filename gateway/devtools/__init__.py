"""Demo and development tools — the partner simulator, the demo, the sample setup, test vectors.

Imported by the CLI only, lazily: nothing of the service depends on them."""
