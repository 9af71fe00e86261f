"""What every identifier and text field must be, in one place for every entry point (the
windows API, partner envelopes and answers, mapping data, the CLI). Imports nothing of ours."""
