"""Model families of this package."""
