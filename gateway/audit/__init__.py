"""The exchange log: its store and writer, and the offline verifier auditors run."""
