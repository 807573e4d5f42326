"""Built-in CP methods; every module here registers itself in CP_METHODS."""
