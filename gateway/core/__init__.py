"""The pure core: planning and the lifecycle rules, what partners may say, the problems we answer with. No I/O."""
