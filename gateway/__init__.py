"""gateway: wires security, mappings and adapters into the 跨省通办 interop service."""

__version__ = "0.1.0"
