"""HTTP routes and their schemas: thin, they parse, call and format."""
