"""The HTTP/JSON surface: one module per resource, each with its routes; ``app`` dispatches to them."""
