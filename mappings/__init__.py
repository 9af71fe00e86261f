"""mappings: matter catalogue, code mapping and schema transforms. Pure: no crypto, no transport."""
