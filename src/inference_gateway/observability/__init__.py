"""The three pillars: metrics, logs and traces, and the middleware that feeds them."""
