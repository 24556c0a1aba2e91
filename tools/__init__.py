"""Developer tools that live next to the `shopping_mtl` library but are not part of it."""
