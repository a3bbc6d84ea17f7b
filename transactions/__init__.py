"""Raw transaction logs: reading their columns into the canonical schema and sorting every row into its place."""
