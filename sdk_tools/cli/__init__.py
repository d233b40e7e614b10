"""One module per command group; each exposes `register(app)` and stays a thin layer over a
library function that tests call directly."""
